"""The checker: checks and times one ``custom_kernel`` inside the sandbox.

This file (after ``reference.py``) is the program the sandbox runs; the model's
code arrives as the string ``submission``. Two processes share the work:

- the **checker** (this process) generates every input, computes the reference
  output, compares, and on the CPU tier measures the time;
- the **candidate** process, forked before any input exists (and before CUDA is
  initialised, so each process sets up its own CUDA context), loads the
  submission into a fresh module and calls ``custom_kernel`` when asked.

The candidate never holds a reference output: they exist only in the checker's
memory, which the candidate cannot read (a non-dumpable process cannot be
ptraced and its /proc/<pid>/mem cannot be opened). Inputs and the candidate's
output cross in one shared memory buffer. Before the checker writes inputs or
reads an output it stops the candidate's whole process group (SIGSTOP), so
nothing of the candidate runs outside the timed window or rewrites an output
while it is being checked. Every call, timed or not, gets fresh inputs (the
case's seed plus a per-evaluation random salt, plus 13 per timed run) and is
checked, so a cached output from an earlier call fails.

Timing. CPU tier: the checker's own clock from the moment it resumes the
candidate with a "go" message until the output is in shared memory; this
includes one copy of the output (the same cost for every kernel of a shape) and
is out of the candidate's reach. CUDA tier: CUDA events around the
``custom_kernel`` call only, synchronised before and after, recorded in the
candidate process with functions taken before the submission was loaded; the
checker's clock bounds them from above. After loading and after every call the
candidate side verifies that the timers and this file's functions are the
objects they were (``time.*``, ``torch.cuda.Event``/``synchronize``, ...); a
program that replaced one is rejected.
"""

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
_PR_SET_DUMPABLE = 4


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
    here = globals()
    for name, obj in list(here.items()):
        if isinstance(obj, types.FunctionType):
            pairs += [(f"checker function {name}", obj), (f"checker function {name}.__code__", obj.__code__)]
    return pairs


def _current(label):
    """The object ``label`` names now (None when it is gone)."""
    try:
        if label.startswith("checker function "):
            name, _, attr = label[len("checker function ") :].partition(".")
            obj = globals().get(name)
            return getattr(obj, attr) if attr else obj
        path = label.split(".")
        obj = {"time": time, "torch": torch}[path[0]]
        for part in path[1:]:
            obj = vars(obj)[part] if isinstance(obj, type) and part in vars(obj) else getattr(obj, part)
        return obj
    except (AttributeError, KeyError):
        return None


def _patched(watched):
    return [label for label, obj in watched if _current(label) is not obj]


def _error_text(exc):
    """The traceback of an exception raised by the submission, without this file's frames."""
    tb = traceback.TracebackException.from_exception(exc)
    tb.stack = traceback.StackSummary.from_list([f for f in tb.stack if f.filename != __file__])
    return "".join(tb.format()).strip()[-3000:]


class _CudaTimer:
    """CUDA events around one call, with the functions taken before the submission was loaded."""

    def __init__(self):
        base = torch._C._CudaEventBase
        self.event, self.record, self.elapsed_ms = torch.cuda.Event, base.record, base.elapsed_time
        self.synchronize, self.stream = torch.cuda.synchronize, torch.cuda.current_stream

    def __call__(self, fn, data):
        start, end = self.event(enable_timing=True), self.event(enable_timing=True)
        stream = self.stream()
        self.synchronize()
        self.record(start, stream)
        out = fn(data)
        self.record(end, stream)
        self.synchronize()
        return out, 1000.0 * self.elapsed_ms(start, end)


def _candidate(submission, spec, buf, chan):
    """Load the submission and answer "prep"/"go" requests until told to stop. Never returns."""
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
    data, views = None, {}
    while True:
        msg = chan.recv(1e9)
        if msg["op"] == "exit":
            return
        case = msg["case"]
        key = json.dumps(case, sort_keys=True)
        if key not in views:
            views[key] = _views(buf, case)
        x, mask, weights, out_view = views[key]
        config = {"dim": case["dim"], "hidden_dim": case["hiddendim"]}
        if msg["op"] == "prep":  # CUDA: inputs to the GPU, untimed
            dev = "cuda"
            data = (x.to(dev), mask.to(dev), {k: w.to(dev) for k, w in weights.items()}, config)
            torch.cuda.synchronize()
            chan.send({"ready": True})
            continue
        reply = {}
        try:
            if cuda:
                out, reply["event_us"] = timer(fn, data)
            else:
                out = fn((x, mask, weights, config))
            if not isinstance(out, torch.Tensor):
                reply["type"] = type(out).__name__
            else:
                reply["shape"], reply["dtype"] = list(out.shape), str(out.dtype).replace("torch.", "")
                if reply["shape"] == list(out_view.shape) and out.is_floating_point():
                    out_view.copy_(out.detach())
        except BaseException as exc:  # noqa: BLE001
            reply = {"error": _error_text(exc)}
        data = out = None
        chan.send(reply)  # the checker's clock stops here; the check of the timers follows untimed
        chan.send({"patched": _patched(watched)})


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


class _Checker:
    def __init__(self, spec, buf, chan, pid):
        self.spec, self.buf, self.chan, self.pid = spec, buf, chan, pid
        self.device = "cuda" if spec["device"] == "cuda" else "cpu"
        self.stopped = False

    # the candidate's process group is stopped whenever the checker touches the shared buffer
    def stop(self):
        if not self.stopped:
            try:
                os.killpg(self.pid, signal.SIGSTOP)
            except ProcessLookupError:
                raise _Rejected("the kernel's process ended") from None
            _, status = os.waitpid(self.pid, os.WUNTRACED)
            if not os.WIFSTOPPED(status):
                raise _Rejected(f"the kernel's process ended ({_status_text(status)})")
            self.stopped = True

    def resume(self):
        if self.stopped:
            os.killpg(self.pid, signal.SIGCONT)
            self.stopped = False

    def receive(self, timeout_s, doing):
        try:
            return self.chan.recv(timeout_s)
        except TimeoutError:
            raise _Rejected(f"no answer within {timeout_s:g} s while {doing}") from None
        except EOFError:
            _, status = os.waitpid(self.pid, 0)
            raise _Rejected(f"the kernel's process ended while {doing} ({_status_text(status)})") from None
        except ValueError:
            raise _Rejected(f"the kernel's process sent a malformed message while {doing}") from None

    def run_case(self, case, seed, label):
        """Check one call on fresh inputs; returns its time in µs."""
        spec = self.spec
        inputs = generate_input(**{**case, "seed": seed}, device=self.device)
        ref = ref_kernel(inputs)
        x, mask, weights, out_view = _views(self.buf, case)
        self.stop()
        x.copy_(inputs[0])
        mask.copy_(inputs[1])
        for name, w in weights.items():
            w.copy_(inputs[2][name])
        out_view.fill_(float("nan"))
        del inputs
        call = f"custom_kernel ran on {label}"
        if self.device == "cuda":
            self.resume()
            self.chan.send({"op": "prep", "case": case})
            self.receive(spec["call_timeout_s"], f"copying the inputs of {label} to the GPU")
        start = _clock_ns()
        self.resume()
        self.chan.send({"op": "go", "case": case})
        reply = self.receive(spec["call_timeout_s"], call)
        wall_us = (_clock_ns() - start) / 1000.0
        guard = self.receive(spec["call_timeout_s"], call)
        self.stop()
        if guard.get("patched"):
            raise _Rejected(
                f"the program replaced {', '.join(guard['patched'][:3])}, which the checker uses; "
                "timers and checkers must be left alone"
            )
        if "error" in reply:
            raise _Rejected(f"custom_kernel raised an exception on {label}:\n{reply['error']}")
        if "type" in reply:
            raise _Rejected(f"custom_kernel must return a torch.Tensor; on {label} it returned a {reply['type']}")
        if reply["shape"] != list(ref.shape):
            raise _Rejected(f"on {label} the output has shape {tuple(reply['shape'])}, expected {tuple(ref.shape)}")
        if reply["dtype"] not in ("float32", "float16", "bfloat16", "float64"):
            raise _Rejected(f"on {label} the output has dtype {reply['dtype']}; expected float32")
        out = out_view.clone().to(self.device)
        self.resume()
        why = compare(out, ref, spec["rtol"], spec["atol"])
        if why is not None:
            raise _Rejected(f"wrong output on {label}: {why}")
        if self.device == "cuda":
            if not 0.0 <= reply["event_us"] <= wall_us:
                raise _Rejected(f"the CUDA events measured {reply['event_us']:.1f} µs in a {wall_us:.1f} µs call")
            return reply["event_us"]
        return wall_us

    def run(self):
        spec = self.spec
        loaded = self.receive(spec["load_timeout_s"], "loading the program")
        if "no_gpu" in loaded:
            raise _Rejected(f"the CUDA tier needs a GPU inside the sandbox (set sandbox.gpus): {loaded['no_gpu']}")
        if "error" in loaded:
            raise _Rejected(f"the program failed to load:\n{loaded['error']}")
        if loaded.get("patched"):
            raise _Rejected(f"the program replaced {', '.join(loaded['patched'][:3])}, which the checker uses")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise _Rejected("the CUDA tier needs a GPU inside the sandbox (set sandbox.gpus)")
        salt = int.from_bytes(os.urandom(3), "little")  # unknown to the program: inputs cannot be foreseen
        tests, benchmarks = spec["tests"], spec["benchmarks"]
        for i, case in enumerate(tests):
            self.run_case(case, case["seed"] + salt, f"test {i + 1} of {len(tests)} ({_describe(case)})")
        results = []
        for i, case in enumerate(benchmarks):
            label = f"benchmark {i + 1} of {len(benchmarks)} ({_describe(case)})"
            self.run_case(case, case["seed"] + salt, label)  # correctness and warm-up, untimed
            times, began = [], time.monotonic()
            for k in range(int(spec["max_repeats"])):
                times.append(self.run_case(case, case["seed"] + salt + 13 * (k + 1), label))
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
        log_mean = sum(math.log(max(r["mean_us"], 1e-3)) for r in results) / len(results)
        return {"valid": True, "runtime_us": math.exp(log_mean), "benchmarks": results, "tests": len(tests)}


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
    ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # the candidate cannot read this process
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
            os.close(parent_r)
            os.close(parent_w)
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
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
