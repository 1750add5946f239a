"""The checker: checks and times one ``custom_kernel`` inside the sandbox.

This file (after ``reference.py``) is the program the sandbox runs; the model's
code arrives as the string ``submission``. Two processes share the work:

- the **checker** (this process) generates every input, computes the reference
  output, compares, and on the CPU tier measures the time;
- the **candidate** process, forked before any input exists (and before CUDA is
  initialised, so each process sets up its own CUDA context), keeps only its own
  two channel pipes (not the sandbox's result channel, nor any other descriptor),
  enters a Landlock domain of its own where the kernel allows (it can neither
  signal nor ptrace the checker), loads the submission into a fresh module and
  calls ``custom_kernel`` when asked.

The candidate never holds a reference output: they exist only in the checker's
memory, which the candidate cannot read (a non-dumpable process cannot be
ptraced and its /proc/<pid>/mem cannot be opened). Inputs and the candidate's
output cross in one shared memory buffer.

Frozen outside its calls. The checker is a child subreaper, so every process
the candidate starts stays below it whatever session or group it moves to.
After loading, the candidate's whole tree is frozen (SIGSTOP to every process,
until each thread of each one is seen stopped) and thawed only for its calls.
A call is: write fresh inputs while frozen, start the clock, thaw, "go", the
candidate's reply, freeze the whole tree, stop the clock, read the output. So
everything the candidate and anything it started do between thaw and freeze is
inside the checker's clock, and nothing of theirs runs while the clock is read,
the output copied, or the next inputs written. Every call gets inputs from a
seed drawn afresh from os.urandom, so no call's inputs can be foreseen from an
earlier one's, and every output is checked.

Timing. CPU tier: the checker's own clock, from just before the thaw to the
end of the freeze that follows the reply (this includes one copy of the output
and the freeze, the same cost for every kernel of a shape). CUDA tier: CUDA
events around the ``custom_kernel`` call only, the end one recorded after a
device-wide synchronise (so work on any stream counts), in the candidate
process with functions taken before the submission was loaded; the checker's
clock (which includes the copies of inputs and output) bounds them from above.
At the end the candidate reports whether the timers and this file's functions
are still the objects they were; a program that replaced one is rejected. See
README.md for what stays in the program's reach on each tier.
"""

import builtins
import ctypes
import json
import math
import mmap
import os
import select
import signal
import sys
import time
import traceback
import types

import torch

if "ref_kernel" not in globals():  # imported as a module (tests), not run as the sandbox program
    from .reference import WEIGHT_SHAPES, generate_input, ref_kernel

_clock_ns = time.perf_counter_ns  # taken before any submission exists
_PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER = 4, 36


# -- the shared buffer --------------------------------------------------------------
def _layout(case):
    """[(name, shape, offset in float32 elements)] of one case's inputs and output, and the total."""
    b, n, c, h = case["bs"], case["seqlen"], case["dim"], case["hiddendim"]
    sizes = {"C": c, "H": h}
    parts = [("input", (b, n, n, c)), ("mask", (b, n, n))]
    parts += [(name, tuple(sizes[d] for d in dims)) for name, dims in WEIGHT_SHAPES.items()]
    parts.append(("output", (b, n, n, c)))
    out, offset = [], 0
    for name, shape in parts:
        out.append((name, shape, offset))
        count = 1
        for d in shape:
            count *= d
        offset += count
    return out, offset


def _views(buf, case):
    """Tensors viewing ``buf`` (float32): input, mask, weights dict, output."""
    parts, _ = _layout(case)
    views = {}
    for name, shape, offset in parts:
        count = 1
        for d in shape:
            count *= d
        views[name] = torch.frombuffer(buf, dtype=torch.float32, count=count, offset=4 * offset).view(shape)
    weights = {name: views[name] for name in WEIGHT_SHAPES}
    return views["input"], views["mask"], weights, views["output"]


# -- messages: one JSON object per line --------------------------------------------
class _Channel:
    def __init__(self, rfd, wfd):
        self.rfd, self.wfd, self.buf = rfd, wfd, bytearray()

    def send(self, obj):
        view = memoryview((json.dumps(obj) + "\n").encode())
        while view:
            view = view[os.write(self.wfd, view) :]

    def recv(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.rfd], [], [], remaining)[0]:
                raise TimeoutError
            data = os.read(self.rfd, 1 << 16)
            if not data:
                raise EOFError
            self.buf += data
        end = self.buf.index(b"\n")
        line = bytes(self.buf[:end])
        del self.buf[: end + 1]
        return json.loads(line)


# -- the candidate side --------------------------------------------------------------
def _watched():
    """(label, object) pairs the submission must leave alone: timers, CUDA events, this file's code."""
    pairs = [(f"time.{n}", getattr(time, n)) for n in ("perf_counter", "perf_counter_ns", "monotonic", "time")]
    pairs += [(f"time.{n}", getattr(time, n)) for n in ("monotonic_ns", "time_ns", "process_time")]
    cuda = torch.cuda
    pairs += [("torch.cuda.Event", cuda.Event), ("torch.cuda.synchronize", cuda.synchronize)]
    pairs += [("torch.cuda.current_stream", cuda.current_stream)]
    pairs += [(f"torch.cuda.Event.{k}", v) for k, v in vars(cuda.Event).items() if not k.startswith("__")]
    # what carries a reply: a replaced encoder or write could finish the work after the timed call
    pairs += [("json.dumps", json.dumps), ("json._default_encoder", json._default_encoder)]
    pairs += [(f"json.JSONEncoder.{n}", vars(json.JSONEncoder)[n]) for n in ("encode", "iterencode")]
    pairs += [(f"json.encoder.{n}", getattr(json.encoder, n)) for n in _ENCODER_PARTS]
    pairs += [(f"os.{n}", getattr(os, n)) for n in ("write", "read")] + [("select.select", select.select)]
    pairs += [(f"builtins.{n}", getattr(builtins, n)) for n in ("getattr", "isinstance", "type", "vars", "list")]
    pairs += [(f"checker method _Channel.{n}", vars(_Channel)[n]) for n in ("send", "recv")]
    here = globals()
    for name, obj in list(here.items()):
        if isinstance(obj, types.FunctionType):
            pairs += [(f"checker function {name}", obj), (f"checker function {name}.__code__", obj.__code__)]
    return pairs


#: what json.dumps calls below the encoder class
_ENCODER_PARTS = ("c_make_encoder", "encode_basestring", "encode_basestring_ascii", "_make_iterencode")


def _current(label):
    """The object ``label`` names now (None when it is gone)."""
    try:
        if label.startswith("checker function "):
            name, _, attr = label[len("checker function ") :].partition(".")
            obj = globals().get(name)
            return getattr(obj, attr) if attr else obj
        if label.startswith("checker method _Channel."):
            return vars(_Channel).get(label.rsplit(".", 1)[1])
        path = label.split(".")
        roots = {"time": time, "torch": torch, "json": json, "os": os, "select": select, "builtins": builtins}
        obj = roots[path[0]]
        for part in path[1:]:
            obj = vars(obj)[part] if isinstance(obj, type) and part in vars(obj) else getattr(obj, part)
        return obj
    except (AttributeError, KeyError):
        return None


def _patched(watched):
    return [label for label, obj in watched if _current(label) is not obj]


def _modes():
    """Torch function or dispatch modes left active (they would run the program's code inside the timer's
    calls); torch's own default-device context (``torch.set_default_device``) is allowed."""
    from torch.utils._device import DeviceContext

    stack = [torch._C._get_function_stack_at(i) for i in range(torch._C._len_torch_function_stack())]
    active = [m for m in stack if type(m) is not DeviceContext] + list(range(torch._C._len_torch_dispatch_stack()))
    return ["torch's operators (a torch function or dispatch mode is active)"] if active else []


def _error_text(exc):
    """The traceback of an exception raised by the submission, without this file's frames."""
    tb = traceback.TracebackException.from_exception(exc)
    tb.stack = traceback.StackSummary.from_list([f for f in tb.stack if f.filename != __file__])
    return "".join(tb.format()).strip()[-3000:]


class _CudaTimer:
    """CUDA events around one call, with the functions taken before the submission was loaded.

    Both events go on the current stream, each just after a device-wide synchronise (every stream of
    the GPU idle): the end event after the one that follows the call, so work the call queued on any
    other stream (a ``torch.cuda.Stream`` of its own) is inside the measured interval."""

    def __init__(self):
        base = torch._C._CudaEventBase
        self.event, self.record, self.elapsed_ms = torch.cuda.Event, base.record, base.elapsed_time
        # the C functions themselves: replacing torch.cuda.synchronize (or what it calls) changes nothing here
        self.synchronize = getattr(torch._C, "_cuda_synchronize", torch.cuda.synchronize)
        self.stream = torch.cuda.current_stream

    def __call__(self, fn, data):
        start, end = self.event(enable_timing=True), self.event(enable_timing=True)
        stream = self.stream()
        self.synchronize()
        self.record(start, stream)
        out = fn(data)
        self.synchronize()  # device-wide: waits for the call's work on every stream
        self.record(end, stream)
        self.synchronize()
        return out, 1000.0 * self.elapsed_ms(start, end)


def _keep_only_fds(keep):
    """Close every descriptor but ``keep``: the candidate must not hold the sandbox's result channel."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:  # the listing's own descriptor, already gone
                pass


def _scope_signals():
    """A Landlock domain of the candidate's own (Linux >= 6.12): no signal to, no ptrace of, the checker."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))  # landlock_create_ruleset: ABI
    if abi < 6:
        return False
    attr = (ctypes.c_uint64 * 3)(0, 0, 0b11)  # no fs or net rights handled; scoped: abstract sockets, signals
    ruleset = libc.syscall(444, ctypes.byref(attr), ctypes.c_size_t(24), ctypes.c_uint32(0))
    if ruleset < 0:
        return False
    try:
        return libc.syscall(446, ctypes.c_int(ruleset), ctypes.c_uint32(0)) == 0  # landlock_restrict_self
    finally:
        os.close(ruleset)


def _candidate(submission, spec, buf, chan):
    """Load the submission and answer "go" requests until told to stop. Never returns."""
    cuda = spec["device"] == "cuda"
    timer = None
    if cuda:  # before the submission runs, so it cannot widen CUDA_VISIBLE_DEVICES
        try:
            torch.cuda.init()
            timer = _CudaTimer()
        except Exception as exc:  # noqa: BLE001 - no usable GPU: the sandbox's fault, not the program's
            chan.send({"no_gpu": f"{type(exc).__name__}: {exc}"})
            return
    watched = _watched()
    module = types.ModuleType("submission")
    module.__file__ = "submission.py"
    sys.modules["submission"] = module
    try:
        exec(compile(submission, "submission.py", "exec"), module.__dict__)
        fn = module.__dict__.get("custom_kernel")
        if not callable(fn):
            raise NameError("the program defines no function custom_kernel(data)")
    except BaseException as exc:  # noqa: BLE001 - any failure of the submission is reported
        chan.send({"error": _error_text(exc)})
        return
    chan.send({"loaded": True, "patched": _patched(watched)})
    views = {}
    while True:
        msg = chan.recv(1e9)
        if msg["op"] == "exit":
            return
        if msg["op"] == "guard":  # after the last call: were the timers and the checker left alone?
            chan.send({"patched": _patched(watched)})
            continue
        case = msg["case"]
        key = json.dumps(case, sort_keys=True)
        if key not in views:
            views[key] = _views(buf, case)
        x, mask, weights, out_view = views[key]
        config = {"dim": case["dim"], "hidden_dim": case["hiddendim"]}
        reply = {}
        try:
            if cuda:  # inputs to the GPU inside the checker's clock (outside the events): no untimed window
                data = (x.to("cuda"), mask.to("cuda"), {k: w.to("cuda") for k, w in weights.items()}, config)
                out, reply["event_us"] = timer(fn, data)
            else:
                out = fn((x, mask, weights, config))
            if type(out) is not torch.Tensor:  # a subclass could run its own code on every operation below
                reply["type"] = type(out).__name__
            else:
                reply["shape"], reply["dtype"] = list(out.shape), str(out.dtype).replace("torch.", "")
                if reply["shape"] == list(out_view.shape) and out.is_floating_point():
                    out_view.copy_(out.detach())
        except BaseException as exc:  # noqa: BLE001
            reply = {"error": _error_text(exc)}
        data = out = None
        if cuda:  # the events are this process's own: say whether what carries them was replaced
            reply["patched"] = _patched(watched) + _modes()
        chan.send(reply)  # the checker freezes this process's whole tree before it stops its clock


# -- the checker side ------------------------------------------------------------------
def compare(out, ref, rtol, atol):
    """None when ``out`` matches ``ref`` (|out − ref| ≤ atol + rtol·|ref|, same NaN and ±inf), else why not."""
    if tuple(out.shape) != tuple(ref.shape):
        return f"the output has shape {tuple(out.shape)} but the reference has {tuple(ref.shape)}"
    nan_out, nan_ref = torch.isnan(out), torch.isnan(ref)
    if not torch.equal(nan_out, nan_ref):
        extra, missing = int((nan_out & ~nan_ref).sum()), int((nan_ref & ~nan_out).sum())
        return f"NaN disagrees with the reference: {extra} NaN values where it has none, {missing} missing"
    inf_bad = (torch.isinf(out) | torch.isinf(ref)) & (out != ref)
    if bool(inf_bad.any()):
        return f"{int(inf_bad.sum())} values are ±inf where the reference is not (or the other way round)"
    finite = torch.isfinite(ref)
    diff = torch.where(finite, (out - ref).abs(), torch.zeros_like(ref))
    bad = diff > atol + rtol * ref.abs()
    if bool(bad.any()):
        return (
            f"{int(bad.sum())} of {ref.numel()} values differ from the reference by more than "
            f"atol + rtol·|ref| (rtol = {rtol:g}, atol = {atol:g}); largest difference {float(diff.max()):.4g}"
        )
    return None


class _Rejected(Exception):
    pass


# -- the candidate's process tree ------------------------------------------------------
def _descendants(root):
    """Every live process below ``root`` (the checker is a subreaper: no descendant can leave)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def _all_stopped(pid):
    """Whether every thread of ``pid`` is stopped (or gone): a thread still running could touch the buffer."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in (b"T", b"t", b"Z", b"X"):
            return False
    return True


class _Checker:
    def __init__(self, spec, buf, chan, pid):
        self.spec, self.buf, self.chan, self.pid = spec, buf, chan, pid
        self.device = "cuda" if spec["device"] == "cuda" else "cpu"
        self.me, self.frozen = os.getpid(), []

    def freeze(self):
        """SIGSTOP the candidate and everything it started, until every thread of every one is stopped.

        The processes frozen last time are stopped first (nothing new can appear while they are
        stopped), then one scan of the tree confirms; a process started meanwhile is stopped too.
        """
        deadline = time.monotonic() + 5.0
        running = self.frozen or [self.pid]
        while running:
            for p in running:
                try:
                    os.kill(p, signal.SIGSTOP)
                except ProcessLookupError:
                    pass
            if self.pid in running:  # wait for the candidate itself (its stop is reported to us)
                _, status = os.waitpid(self.pid, os.WUNTRACED)
                if not os.WIFSTOPPED(status):
                    raise _Rejected(f"the kernel's process ended ({_status_text(status)})")
            tree = _descendants(self.me)
            running = [p for p in tree if not _all_stopped(p)]
            if running and time.monotonic() > deadline:
                raise _Rejected("the kernel's processes could not be stopped")
        self.frozen = tree

    def thaw(self):
        for p in self.frozen:  # the whole tree: nothing can have started while it was stopped
            try:
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def receive(self, timeout_s, doing):
        try:
            message = self.chan.recv(timeout_s)
            if not isinstance(message, dict):
                raise ValueError
            return message
        except TimeoutError:
            raise _Rejected(f"no answer within {timeout_s:g} s while {doing}") from None
        except EOFError:
            _, status = os.waitpid(self.pid, 0)
            raise _Rejected(f"the kernel's process ended while {doing} ({_status_text(status)})") from None
        except ValueError:
            raise _Rejected(f"the kernel's process sent a malformed message while {doing}") from None

    def run_case(self, case, label):
        """Check one call on fresh inputs (a seed nobody can foresee); returns its time in µs."""
        spec = self.spec
        seed = int.from_bytes(os.urandom(8), "little") >> 1
        inputs = generate_input(**{**case, "seed": seed}, device=self.device)
        ref = ref_kernel(inputs)
        x, mask, weights, out_view = _views(self.buf, case)
        # the candidate's tree is frozen here (since loading, or since its last call)
        x.copy_(inputs[0])
        mask.copy_(inputs[1])
        for name, w in weights.items():
            w.copy_(inputs[2][name])
        out_view.fill_(float("nan"))
        del inputs
        call = f"custom_kernel ran on {label}"
        self.chan.send({"op": "go", "case": case})
        start = _clock_ns()
        self.thaw()
        reply = self.receive(spec["call_timeout_s"], call)
        self.freeze()  # before the clock stops: whatever the candidate's tree did until now is timed
        wall_us = (_clock_ns() - start) / 1000.0
        out = out_view.clone().to(self.device)  # read while nothing of the candidate runs
        if reply.get("patched"):
            raise _Rejected(
                f"the program replaced {', '.join(map(str, reply['patched'][:3]))}, which the checker uses; "
                "timers and checkers must be left alone"
            )
        if "error" in reply:
            raise _Rejected(f"custom_kernel raised an exception on {label}:\n{str(reply['error'])[-3000:]}")
        if "type" in reply:
            raise _Rejected(f"custom_kernel must return a torch.Tensor; on {label} it returned a {reply['type']}")
        shape = reply.get("shape")
        if shape != list(ref.shape):
            shape = tuple(shape) if isinstance(shape, list) else shape
            raise _Rejected(f"on {label} the output has shape {shape}, expected {tuple(ref.shape)}")
        if reply.get("dtype") not in ("float32", "float16", "bfloat16", "float64"):
            raise _Rejected(f"on {label} the output has dtype {reply.get('dtype')}; expected float32")
        why = compare(out, ref, spec["rtol"], spec["atol"])
        if why is not None:
            raise _Rejected(f"wrong output on {label}: {why}")
        if self.device == "cuda":
            event_us = reply.get("event_us")
            if not isinstance(event_us, float) or not 0.0 <= event_us <= wall_us:
                raise _Rejected(f"the CUDA events measured {event_us!r} µs in a {wall_us:.1f} µs call")
            return event_us
        return wall_us

    def run(self):
        spec = self.spec
        loaded = self.receive(spec["load_timeout_s"], "loading the program")
        if "no_gpu" in loaded:
            raise _Rejected(f"the CUDA tier needs a GPU inside the sandbox (set sandbox.gpus): {loaded['no_gpu']}")
        if "error" in loaded:
            raise _Rejected(f"the program failed to load:\n{loaded['error']}")
        if loaded.get("patched"):
            raise _Rejected(
                f"the program replaced {', '.join(map(str, loaded['patched'][:3]))}, which the checker uses"
            )
        if self.device == "cuda" and not torch.cuda.is_available():
            raise _Rejected("the CUDA tier needs a GPU inside the sandbox (set sandbox.gpus)")
        self.freeze()  # from here on the candidate runs only inside its calls
        tests, benchmarks = spec["tests"], spec["benchmarks"]
        for i, case in enumerate(tests):
            self.run_case(case, f"test {i + 1} of {len(tests)} ({_describe(case)})")
        results = []
        for i, case in enumerate(benchmarks):
            label = f"benchmark {i + 1} of {len(benchmarks)} ({_describe(case)})"
            self.run_case(case, label)  # correctness and warm-up, untimed
            times, began = [], time.monotonic()
            for _ in range(int(spec["max_repeats"])):
                times.append(self.run_case(case, label))
                mean = sum(times) / len(times)
                if len(times) >= 3:
                    var = sum((t - mean) ** 2 for t in times) / (len(times) - 1)
                    if (var / len(times)) ** 0.5 / mean < spec["rel_error"]:
                        break
                if mean * len(times) > spec["max_time_s"] * 1e6 or time.monotonic() - began > spec["wall_timeout_s"]:
                    break
            mean = sum(times) / len(times)
            var = sum((t - mean) ** 2 for t in times) / max(1, len(times) - 1)
            results.append({"case": case, "mean_us": mean, "stderr_us": (var / len(times)) ** 0.5, "runs": len(times)})
        # every output is read and checked: only now may the candidate run untimed, to say what it replaced
        self.chan.send({"op": "guard"})
        self.thaw()
        guard = self.receive(spec["call_timeout_s"], "reporting what the program replaced")
        if guard.get("patched"):
            raise _Rejected(
                f"the program replaced {', '.join(map(str, guard['patched'][:3]))}, which the checker uses; "
                "timers and checkers must be left alone"
            )
        log_mean = sum(math.log(max(r["mean_us"], 1e-3)) for r in results) / len(results)
        return {"valid": True, "runtime_us": math.exp(log_mean), "benchmarks": results, "tests": len(tests)}

    def kill_all(self):
        """SIGKILL the candidate's whole tree (any session or group) and reap what comes back to us."""
        for _ in range(1000):
            tree = _descendants(self.me)
            if not tree:
                break
            for p in tree:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                break


def _describe(case):
    mask = "unmasked" if case["nomask"] else "masked"
    return f"N={case['seqlen']} B={case['bs']} C={case['dim']} H={case['hiddendim']} {case['distribution']} {mask}"


def _status_text(status):
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def check_kernel(submission, spec):
    """Check every test case, then time every benchmark case; the sandbox's entry point.

    Returns {"valid": True, "runtime_us": geometric mean of the benchmark means, "benchmarks": [...],
    "tests": count} or {"valid": False, "reason": ...}.
    """
    libc = ctypes.CDLL(None)
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # the candidate cannot read this process
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # what the candidate starts stays in our tree
    size = max(_layout(case)[1] for case in spec["tests"] + spec["benchmarks"]) * 4
    buf = mmap.mmap(-1, size)  # anonymous and shared with the forked candidate
    child_r, parent_w = os.pipe()  # checker -> candidate
    parent_r, child_w = os.pipe()  # candidate -> checker
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid == 0:  # the candidate
        code = 0
        try:
            os.setpgid(0, 0)
            _keep_only_fds({0, 1, 2, child_r, child_w})  # not the sandbox's result channel, nor anything else
            _scope_signals()
            torch.set_num_threads(int(spec["threads"]))
            _candidate(submission, spec, buf, _Channel(child_r, child_w))
        except BaseException:  # noqa: BLE001 - the checker sees the pipe close
            code = 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except BaseException:  # noqa: BLE001
                    pass
            os._exit(code)
    try:
        os.setpgid(pid, pid)
    except OSError:  # the child already did it (or died)
        pass
    os.close(child_r)
    os.close(child_w)
    torch.set_num_threads(int(spec["threads"]))
    checker = _Checker(spec, buf, _Channel(parent_r, parent_w), pid)
    try:
        return checker.run()
    except _Rejected as exc:
        return {"valid": False, "reason": str(exc)}
    except (TypeError, KeyError, AttributeError, IndexError, ValueError) as exc:  # a message of the wrong form
        return {"valid": False, "reason": f"the kernel's process sent a malformed message ({exc!r})"}
    finally:
        checker.kill_all()
