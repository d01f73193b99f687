"""The callback session's collaborators: fakes and real classes provide the same interfaces.

Every fake the session tests use declares the interface of the real collaborator it stands
for and passes ``verifyObject`` against it, and so does the real class: a method renamed or
given a new required argument on either side fails here, not in production.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from cbserver.billing.authorize import Authorizer, IAuthorizer
from cbserver.billing.spool import Spool
from cbserver.billing.xdr import ICallRecorder, XdrWriter
from cbserver.callback.legmedia import ILegMedia, IMediaFactory, LegMedia, MediaEnvironment
from cbserver.callback.legs import LegListener
from cbserver.callback.service import MediaFactory
from cbserver.media.ports import PortPool
from cbserver.media.relay import IRelay, Relay
from cbserver.sip.interfaces import ICall, IUserAgent
from cbserver.sip.ua import ICallListener, UserAgent
from tests.unit.callback import fakes
from tests.unit.callback.drivenfakes import (
    DrivenAuthorizer,
    DrivenCall,
    DrivenLegMedia,
    DrivenMedia,
    DrivenRecorder,
    DrivenRelay,
    DrivenUA,
    World,
)
from tests.unit.sip_ua.fakes import FakeTransport
from tests.unit.sip_ua.uafakes import SDP_OFFER, Listener, config


class _Db:
    instance_id = "00000000-0000-0000-0000-000000000001"
    ready = True


def _env(clock) -> MediaEnvironment:
    return MediaEnvironment(clock=clock, reactor=clock, pool=PortPool(40000, 40010),
                            media_clock=object(), bind_address="127.0.0.1",
                            public_address="127.0.0.1", libraries={"Web callback": object()})


def test_the_fakes_of_fakes_py_provide_the_interfaces():
    clock = Clock()
    ua = fakes.FakeUA()
    call = ua.place_call("15551234", listener=Listener())
    media = fakes.FakeMedia(clock)
    leg = media.new_leg("Web callback", "s1-A")
    assert verifyObject(IUserAgent, ua)
    assert verifyObject(ICall, call)
    assert verifyObject(IMediaFactory, media)
    assert verifyObject(ILegMedia, leg)
    assert verifyObject(IRelay, media.join(leg, media.new_leg("Web callback", "s1-B"), "s1"))
    assert verifyObject(IAuthorizer, fakes.FakeAuthorizer(clock))
    assert verifyObject(ICallRecorder, fakes.FakeRecorder())


def test_the_driven_fakes_of_the_state_machine_test_provide_the_interfaces():
    world = World()
    ua = DrivenUA(world)
    call = ua.place_call("15551234", caller_id="x", display_name=None, sdp_offer=b"",
                         no_answer_timeout=30, listener=Listener())
    media = DrivenMedia(world)
    leg = media.new_leg("Web callback", "s1-A")
    for iface, obj, cls in ((IUserAgent, ua, DrivenUA), (ICall, call, DrivenCall),
                            (IMediaFactory, media, DrivenMedia), (ILegMedia, leg, DrivenLegMedia),
                            (IRelay, media.join(leg, leg, "s1"), DrivenRelay),
                            (IAuthorizer, DrivenAuthorizer(world), DrivenAuthorizer),
                            (ICallRecorder, DrivenRecorder(world), DrivenRecorder)):
        assert isinstance(obj, cls) and verifyObject(iface, obj)


def test_the_real_user_agent_and_call_provide_the_interfaces():
    clock = Clock()
    ua = UserAgent(FakeTransport(), clock, config())
    call = ua.place_call("15551234", caller_id="cb1818", display_name=None, sdp_offer=SDP_OFFER,
                         no_answer_timeout=30, listener=Listener())
    assert verifyObject(IUserAgent, ua)
    assert verifyObject(ICall, call)
    call.hangup()
    ua.stop()
    clock.advance(64)


def test_the_real_media_classes_provide_the_interfaces():
    clock = Clock()
    env = _env(clock)
    factory = MediaFactory(env)
    a, b = factory.new_leg("Web callback", "s1-A"), factory.new_leg("Web callback", "s1-B")
    assert isinstance(a, LegMedia)
    assert verifyObject(IMediaFactory, factory)
    assert verifyObject(ILegMedia, a)
    relay = factory.join(a, b, "s1")
    assert isinstance(relay, Relay)
    assert verifyObject(IRelay, relay)


def test_the_real_authorizer_and_xdr_writer_provide_the_interfaces(tmp_path):
    clock = Clock()
    assert verifyObject(IAuthorizer, Authorizer(_Db(), tariffs=None, clock=clock, node="n1"))
    assert verifyObject(ICallRecorder, XdrWriter(_Db(), clock, Spool(tmp_path / "xdr.spool")))


def test_the_leg_listener_is_a_call_listener():
    assert verifyObject(ICallListener, LegListener(session=None, leg=None))
