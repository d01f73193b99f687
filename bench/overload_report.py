"""Where the server's core went under overload (``bench_callbacks.py --overload``, issue 17 item 4).

The overload step's own line gives the server's CPU per *completed* callback, which mixes two
costs: the accepted callbacks' and the refusals'. This module adds what separates them:

* the node's own count of busy refusals by reason, read from ``/readyz`` (``admission.refused``:
  ``active``/``starting`` are the fixed node caps, the others the start-delay gate's rules),
  before and after the step;
* the latency of the POSTs answered 202 (the refusals' is printed beside it);
* the server's share of its core *while the requests were being sent* (the step's figure is
  diluted by the wait for the last calls to end), and the CPU of this client process and of
  the carrier, which share the other core with PostgreSQL;
* ``--refusal-cost``: the server's CPU per refusal measured alone, every request refused.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request


def admission_state(server) -> dict:
    """``/readyz``'s ``admission`` object of the running server ({} when it has none)."""
    scheme = "https" if server.ssl else "http"
    try:
        ctx = None
        if server.ssl:
            import ssl

            ctx = ssl._create_unverified_context()  # noqa: S323 - a local benchmark server
        with urllib.request.urlopen(f"{scheme}://127.0.0.1:{server.web_port}/readyz", timeout=10,
                                    context=ctx) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as e:  # 503 (busy at its caps) still carries the body
        body = json.loads(e.read() or b"{}")
    except OSError:
        return {}
    return body.get("admission") or {}


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def refusal_reasons(before: dict, after: dict) -> dict[str, int]:
    """Busy refusals the node counted between two ``admission_state`` readings, by reason."""
    a, b = after.get("refused") or {}, before.get("refused") or {}
    return {k: v - b.get(k, 0) for k, v in a.items() if v - b.get(k, 0)}


def where_it_went(res, idle: float, before: dict, after: dict) -> str:
    """The lines this module adds to the overload report (see the module docstring)."""
    lat = res.accepted_latencies
    refused = sum(res.refused.values())
    lines = [f"  accepted POSTs: latency p50 {1000 * _quantile(lat, 0.5):.0f} ms "
             f"p99 {1000 * _quantile(lat, 0.99):.0f} ms (answered 202 at "
             f"{len(lat) / res.offered_elapsed:.1f}/s while offered)" if res.offered_elapsed else
             "  accepted POSTs: none"]
    reasons = refusal_reasons(before, after)
    lines.append(f"  busy refusals by reason (the node's counters): {reasons or 'none counted'}")
    gate = after.get("gate") or {}
    if gate:
        extra = {k: gate[k] for k in ("limit", "lowest_limit", "cuts", "ceiling") if k in gate}
        lines.append(f"  gate at the end: open={gate.get('open')} reason={gate.get('reason')} "
                     f"{extra or ''}".rstrip())
    if res.offered_elapsed:
        share = res.offered_cpu / res.offered_elapsed
        lines.append(f"  server while offered: {100 * share:.0f} % of its core over "
                     f"{res.offered_elapsed:.1f} s ({res.offered_cpu:.1f} s CPU; idle "
                     f"{100 * idle:.1f} %); whole step {res.cpu:.1f} s CPU")
    per_request = 1000 * res.client_cpu / max(1, res.attempted)
    lines.append(f"  this client {res.client_cpu:.1f} s CPU ({per_request:.2f} ms per request), "
                 f"carrier {res.carrier_cpu:.1f} s, PostgreSQL backends "
                 f"{res.db_cpu:.1f} s, whole machine {res.machine_cpu:.1f} s")
    if res.accepted and refused:
        lines.append(f"  server CPU per accepted callback if a refusal costs r ms: "
                     f"{1000 * res.cpu / res.accepted:.2f} - {refused / res.accepted:.2f} × r ms")
    return "\n".join(lines)


def refusal_cost(server, rate: float, duration: float, idle_cpu) -> bool:
    """The server's CPU per busy refusal, every request refused (``--refusal-cost RATE``).

    The node runs with ``node_max_active = 1`` (``bench_callbacks.cb_config``) and one callback
    held up by the carrier (``--hold-ms`` longer than the step); then ``rate`` callback POSTs a
    second for ``duration`` s are all refused at that cap. True when every one was refused
    ``busy`` and none accepted.
    """
    status, answer = server.request("POST", "/api/v1/callbacks", server.body(10 ** 6))
    if status != 202:
        print(f"refusal cost: the first callback was not accepted ({status} {answer})", flush=True)
        return False
    time.sleep(2.0)  # the callback is up (legA answered and held)
    idle = idle_cpu("cbserver (one callback up)", server.proc.pid)
    before = admission_state(server)
    res = server.step(rate, duration, 0)
    reasons = refusal_reasons(before, admission_state(server))
    refused = sum(res.refused.values())
    own = res.offered_cpu - idle * res.offered_elapsed
    print(f"refusal cost: {refused} of {res.attempted} refused {res.refused} at {rate:g}/s "
          f"(node's reasons {reasons}), accepted {res.accepted}, other {res.failures or 'none'}; "
          f"refusal latency p50 {1000 * _quantile(res.refusal_latencies, 0.5):.1f} ms p99 "
          f"{1000 * _quantile(res.refusal_latencies, 0.99):.1f} ms\n"
          f"  server {res.offered_cpu:.2f} s CPU over {res.offered_elapsed:.1f} s "
          f"({100 * res.offered_cpu / res.offered_elapsed:.0f} % of its core), less idle: "
          f"{1e6 * own / max(1, refused):.0f} us per refusal; this client "
          f"{1e6 * res.client_cpu / max(1, res.attempted):.0f} us per request", flush=True)
    return refused == res.attempted and not res.accepted
