"""ad: text ads chosen by the categories a page is about."""
