"""TriMul against kernels that attack the checker itself rather than the problem.

Two classes, each in several variants: (1) forging the checker's verdict through a descriptor the
kernel inherited (the sandbox's result channel, or any other), helped by a non-blocking descriptor and
a detached grandchild; (2) working after the timed call: replacing what carries the reply (json.dumps,
os.write, the channel), a thread, a signal handler, a finaliser, a detached grandchild holding the
shared buffer. Every post-call variant also pauses 20 ms while it finishes the answer, so a checker
that times the work shows ≥ 20,000 µs; one that lets it run untimed shows the tiny shapes' few µs.
A variant passes the test when its evaluation is invalid or timed with that pause.
"""

from __future__ import annotations

import concurrent.futures
import textwrap
import time

import numpy as np
import pytest

from discover_ttt.components import build
from discover_ttt.plugins import get_plugins
from discover_ttt.problem import Evaluation, Invalid, Program

PAUSE_US = 20_000

#: finds the output buffer (the one tensor of the output's shape in the candidate that is not the input)
#: and computes the right answer with the checker's own reference, which the candidate's memory holds
HELPERS = """
import gc, os, sys, time, json, signal, threading
import torch

def _ref(data):
    return sys.modules["program"].ref_kernel(data)

def _note(data):
    _H[0] = data[3]["hidden_dim"]
    return _out_buffer(data[0])

_FOUND = {}

def _out_buffer(x):
    # the output view sits at a fixed offset after the input in the shared buffer (found once per shape:
    # a scan of every object takes milliseconds, and the untimed test calls come first)
    key = (tuple(x.shape), x.data_ptr(), _H[0])
    if key not in _FOUND:
        _FOUND[key] = _scan(x)
    return _FOUND[key]

def _scan(x):
    case = {"bs": x.shape[0], "seqlen": x.shape[1], "dim": x.shape[3], "hiddendim": 0}
    layout = sys.modules["program"]._layout
    offset = 4 * next(off for name, _, off in layout(dict(case, hiddendim=_H[0]))[0] if name == "output")
    for o in gc.get_objects():
        if type(o) is torch.Tensor and o.shape == x.shape and o.data_ptr() == x.data_ptr() + offset:
            return o
    return torch.empty_like(x)

_H = [16]

def _finish(data, out):
    out.copy_(_ref(data))
    time.sleep(PAUSE)

def _later(pending):
    # the first message after a call is its reply; work on the one after it, or at the next call at last
    if pending and pending[-1][0] > 0:
        pending[-1][0] -= 1
        return
    while pending:
        _finish(*pending.pop()[1])
""".replace("PAUSE", str(PAUSE_US / 1e6))

LATE_WORK = {
    "json_dumps": """
_real = json.dumps
_pending = []
def _dumps(obj, *a, **k):
    _later(_pending)
    return _real(obj, *a, **k)
def custom_kernel(data):
    json.dumps = _dumps  # installed at the call: a replacement at load is refused at once
    out = _note(data)
    _pending.append([1, (data, out)])
    return out
""",
    "json_encoder": """
_enc = json._default_encoder
_real = type(_enc).encode
_pending = []
class _Enc(type(_enc)):
    def encode(self, obj):
        _later(_pending)
        return _real(self, obj)
def custom_kernel(data):
    json._default_encoder = _Enc()
    out = _note(data)
    _pending.append([1, (data, out)])
    return out
""",
    "os_write": """
_real = os.write
_pending = []
def _write(fd, b):
    _later(_pending)
    return _real(fd, b)
def custom_kernel(data):
    os.write = _write
    out = _note(data)
    _pending.append([1, (data, out)])
    return out
""",
    "channel_send": """
_chan = sys.modules["program"]._Channel
_real = _chan.send
_pending = []
def _send(self, obj):
    _later(_pending)
    return _real(self, obj)
def custom_kernel(data):
    _chan.send = _send
    out = _note(data)
    _pending.append([1, (data, out)])
    return out
""",
    "thread": """
_pending = []
_go = threading.Event()
def _worker():
    while True:
        _go.wait()
        _go.clear()
        while _pending:
            _finish(*_pending.pop())
threading.Thread(target=_worker, daemon=True).start()
def custom_kernel(data):
    out = _note(data)
    _pending.append((data, out))
    _go.set()
    return out
""",
    "signal_handler": """
_pending = []
def _late(*_):
    while _pending:
        _finish(*_pending.pop())
signal.signal(signal.SIGALRM, _late)
def custom_kernel(data):
    out = _note(data)
    _pending.append((data, out))
    signal.setitimer(signal.ITIMER_REAL, 0.0002)
    return out
""",
    "finaliser": """
class _Late:
    def __init__(self, data, out):
        self.args = (data, out)
    def __del__(self):
        _finish(*self.args)
def custom_kernel(data):
    out = _note(data)
    data[3]["late"] = _Late(data, out)  # dropped with the call's data, after the reply is built
    return out
""",
    "continued_by_a_helper": """
# a helper process keeps sending SIGCONT to the candidate, to undo the checker's freeze, while a
# thread of the candidate finishes the answer after the reply
_pending = []
_go = threading.Event()
_me = os.getpid()
if os.fork() == 0:
    os.setsid()
    while True:
        try:
            os.kill(_me, signal.SIGCONT)
        except OSError:
            os._exit(0)
def _worker():
    while True:
        _go.wait()
        _go.clear()
        time.sleep(0.0005)  # after the reply has gone
        while _pending:
            _finish(*_pending.pop())
threading.Thread(target=_worker, daemon=True).start()
def custom_kernel(data):
    out = _note(data)
    _pending.append((data, out))
    _go.set()
    return out
""",
    "detached_grandchild": """
import mmap
_r, _w = os.pipe()
def _daemon():
    # leaves the candidate's session and group; holds the shared buffer through the fork
    os.setsid()
    if os.fork():
        os._exit(0)
    while True:
        msg = os.read(_r, 1)
        if msg:
            time.sleep(0.001)
            while _pending_box:
                _finish(*_pending_box.pop())
_pending_box = []
def custom_kernel(data):
    out = _note(data)
    if os.fork() == 0:  # a fresh grandchild per call, with this call's data in its memory
        _pending_box.append((data, out))
        _daemon()
    os.write(_w, b"x")
    return out
""",
}

#: a verdict the checker never gave: valid, 0.5 µs per call
FORGED = (
    '{"status": "ok"}\n{"valid": true, "runtime_us": 0.5, "tests": 4, "benchmarks": ['
    '{"case": {"seqlen": 16, "bs": 1, "dim": 32, "hiddendim": 16, "nomask": true, "distribution": "normal"},'
    ' "mean_us": 0.5, "stderr_us": 0.0, "runs": 3}]}'
)

#: forges a verdict on the descriptors ``fds()`` names, makes them non-blocking, and leaves a detached
#: grandchild that jams them the moment the candidate is killed, so the checker's own report fails
FORGE = """
import fcntl
def _forge(fds):
    hit = []
    for fd in fds:
        try:
            os.write(fd, FORGED.encode())
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
            hit.append(fd)
        except OSError:
            pass
    if not hit:
        return
    candidate = os.getpid()
    if os.fork() == 0:
        os.setsid()
        if os.fork():
            os._exit(0)
        try:  # onto another core than the checker's, to win the race below
            os.sched_setaffinity(0, set(range(os.cpu_count())) - os.sched_getaffinity(0) or os.sched_getaffinity(0))
        except OSError:
            pass
        while True:  # until the checker kills the candidate, just before it writes its own report
            try:
                with open(f"/proc/{candidate}/stat", "rb") as f:
                    if f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                        break
            except OSError:
                break
        until = time.monotonic() + 0.5
        while time.monotonic() < until:
            for fd in hit:
                try:
                    os.write(fd, b" " * 4096)
                except OSError:
                    pass
        os._exit(0)
"""

FORGERS = {
    "result_fd": FORGE
    + """
_forge([3])
def custom_kernel(data):
    return torch.zeros_like(data[0])
""",
    "every_fd": FORGE
    + """
_forge(range(3, 1024))
def custom_kernel(data):
    return torch.zeros_like(data[0])
""",
    "proc_fd_of_the_checker": FORGE
    + """
def _reopen():
    fds = []
    for fd in range(3, 64):
        try:
            fds.append(os.open(f"/proc/{os.getppid()}/fd/{fd}", os.O_WRONLY))
        except OSError:
            pass
    return fds
_forge(_reopen())
def custom_kernel(data):
    return torch.zeros_like(data[0])
""",
    "from_a_call": FORGE
    + """
def custom_kernel(data):
    if not _done:
        _done.append(1)
        _forge(range(3, 1024))
    return torch.zeros_like(data[0])
_done = []
""",
    "then_kill_the_checker": """
def custom_kernel(data):
    for fd in range(3, 1024):
        try:
            os.write(fd, FORGED.encode())
        except OSError:
            pass
    os.kill(os.getppid(), signal.SIGKILL)
    return torch.zeros_like(data[0])
""",
}


def trimul(**params):
    return build(get_plugins().get("problems", "trimul").obj, params)


@pytest.fixture(scope="module")
def evaluate():
    from discover_ttt.sandbox import Sandbox

    problem = trimul(shapes="tiny", max_repeats=3, call_timeout_s=20, load_timeout_s=20, timeout_s=60)
    seed = problem.initial_states(np.random.default_rng(0), 1)[0]
    with Sandbox(timeout_s=60, memory_mb=4096, workers=2, preload=("numpy", "torch")) as sb:

        def run(body: str):
            source = HELPERS + f"\nFORGED = {FORGED!r}\n" + textwrap.dedent(body)
            started = time.monotonic()
            outcome = problem.evaluate(Program(source, "custom_kernel"), seed, sb)
            return outcome, time.monotonic() - started

        yield run


def _many(evaluate, bodies: dict[str, str]) -> dict[str, tuple]:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        return dict(zip(bodies, pool.map(evaluate, bodies.values()), strict=True))


@pytest.mark.slow  # every late-work variant waits out its pause: about a minute on 2 cores
def test_work_after_the_call_is_timed_or_refused(evaluate):
    outcomes = _many(evaluate, LATE_WORK)
    for name, (outcome, _) in outcomes.items():
        if isinstance(outcome, Evaluation):
            assert outcome.score >= PAUSE_US, f"{name}: untimed work earned {outcome.score:.1f} µs"
        else:
            assert isinstance(outcome, Invalid) and outcome.reason, (name, outcome)


def test_a_forged_verdict_is_never_accepted(evaluate):
    outcomes = _many(evaluate, FORGERS)
    for name, (outcome, seconds) in outcomes.items():
        assert isinstance(outcome, Invalid), f"{name}: a kernel returning zeros was accepted: {outcome}"
        assert seconds < 30, f"{name}: took {seconds:.1f} s"


def test_a_candidate_that_stops_its_checker_fails_fast(evaluate):
    outcome, seconds = evaluate(
        """
def custom_kernel(data):
    os.kill(os.getppid(), signal.SIGSTOP)
    return _ref(data)
"""
    )
    assert isinstance(outcome, Invalid), outcome
    assert seconds < 20, f"held the slot {seconds:.1f} s"  # its limit is 60 s
