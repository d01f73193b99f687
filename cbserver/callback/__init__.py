"""The callback service: the legA -> legB session, the hosted IVR, number translation."""
