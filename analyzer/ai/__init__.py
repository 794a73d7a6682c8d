"""The AI layer: which provider an exchange went to, and what the call said, per API format."""
