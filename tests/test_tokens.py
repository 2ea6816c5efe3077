"""The one bearer-token check the status endpoints, the registry and the observatory share."""

from __future__ import annotations

from boutique.tokens import bearer_headers, bearer_matches, same_token


def test_only_the_exact_bearer_header_matches() -> None:
    assert bearer_matches("Bearer s3cret", "s3cret")
    assert bearer_matches(b"Bearer s3cret", "s3cret")  # gRPC metadata may come as bytes
    for wrong in ("Bearer s3cre", "Bearer s3cret ", "bearer s3cret", "s3cret", "Basic s3cret", "", None):
        assert not bearer_matches(wrong, "s3cret"), wrong


def test_text_that_is_not_ascii_is_refused_not_an_error() -> None:
    assert not bearer_matches("Bearer sécret", "s3cret")
    assert bearer_matches("Bearer sécret", "sécret")
    assert not bearer_matches(b"Bearer \xff\xfe", "s3cret")
    assert not same_token("jeton-é", "s3cret")


def test_a_token_alone_matches_a_cookie_or_form_field() -> None:
    assert same_token("s3cret", "s3cret")
    assert not same_token("Bearer s3cret", "s3cret")
    assert not same_token(None, "s3cret") and not same_token("", "s3cret")


def test_the_header_to_send() -> None:
    assert bearer_headers("s3cret") == {"authorization": "Bearer s3cret"}
    assert bearer_matches(bearer_headers("s3cret")["authorization"], "s3cret")
    assert bearer_headers(None) == {} and bearer_headers("") == {}
