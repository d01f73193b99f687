"""twistd plugin: ``twistd -n cbserver --config FILE`` runs the callback server."""

from twisted.application.service import ServiceMaker

cbserver = ServiceMaker(
    "cbserver",
    "cbserver.tap",
    "A WEB callback server for VoIP operators (web trigger, SIP UA, IVR, rating)",
    "cbserver",
)
