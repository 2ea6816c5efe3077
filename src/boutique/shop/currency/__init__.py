"""currency: converts Money between the ECB reference currencies through the euro."""
