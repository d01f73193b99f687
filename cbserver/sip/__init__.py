"""A native SIP stack on Twisted: message -> transport -> transaction -> dialog -> user agent."""
