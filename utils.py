"""
The plumbing of train.py and sample.py, kept out of their way so that each reads as what it does:

- the command line: config files and --key=value read against a dataclass, --help written from the
  dataclass's own source, and a main that ends a mistake with one line `error: ...`, not a traceback;
- the device and precision a process computes in, and its place among DDP processes;
- datasets on disk: prepared when they need no download, with one line saying what to do when missing;
- checkpoints on disk: an atomic write, and a read that refuses what is not this project's in one line;
- what a long training run needs: a console that shows the time left during long waits, Ctrl-C as a
  request to stop at the next safe point, the steps' log (losses read one step late, checked, written
  to the console and log.csv), and a hint when a run is clearly too big for a CPU.

TrainConfig, the model, the optimizer and the loop are train.py's. A function here that reads
settings takes any object with the fields it names (cfg.device, cfg.dtype, cfg.log_interval, ...).
"""

import csv
import dataclasses
import gc
import inspect
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from model import BAND_PATTERNS, GPT, GPTConfig, ConfigError

# -----------------------------------------------------------------------------
# The command line

def parse_config(cls, argv, files=True):
    """An instance of the dataclass cls from nanoGPT-style arguments: config files (plain Python
    assignments; only with `files`), then --key=value overrides, a later one winning. A ConfigError
    names the first argument that does not fit: an unknown key, or a value of the wrong type."""
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    values = {}
    for arg in argv:
        if files and not arg.startswith("--"):
            values.update(read_config_file(arg, types))
            continue
        key, eq, text = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if not eq:
            raise ConfigError(f"argument {arg!r} must look like --key=value (--help lists the keys)")
        if key not in types:
            raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(types)}")
        values[key] = parse_value(key, text, types[key])
    return cls(**values)


def read_config_file(path, types):
    """The settings a config file assigns, each checked against types (a dict key -> type)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} not found (expected a path like config/train_shakespeare_char.py)")
    scope, values = {}, {}
    exec(compile(open(path).read(), path, "exec"), scope)
    for key, value in scope.items():
        if key.startswith("_") or inspect.ismodule(value) or callable(value):
            continue  # imports and helpers a config file may use
        if key not in types:
            raise ConfigError(f"{path}: unknown config key {key!r}; known keys: {', '.join(types)}")
        if types[key] is float and type(value) is int:
            value = float(value)  # `learning_rate = 1` means 1.0
        if type(value) is not types[key]:
            raise ConfigError(f"{path}: {key} must be {types[key].__name__}, got {value!r} ({type(value).__name__})")
        values[key] = value
    return values


def parse_value(key, text, typ):
    """The command-line text of --key=value as type typ, or a ConfigError naming the key."""
    if typ is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"--{key} expects True or False, got {text!r}")
    try:
        return typ(text)
    except ValueError:
        raise ConfigError(f"--{key} expects {typ.__name__}, got {text!r}") from None


def settings_help(cls):
    """Every field of the dataclass cls in its order, with its default, type and the comment it has in
    the source (read from there, so the two never differ); comment lines become group headings."""
    lines, fields = [], {f.name: f for f in dataclasses.fields(cls)}
    for line in inspect.getsource(cls).splitlines():
        code, _, comment = line.strip().partition("#")
        name = code.split(":")[0].strip()
        if not code:  # a comment line: the heading of a group of settings
            lines.append(f"  {comment.strip()}")
        elif name in fields:
            lines.append(option_line(name, fields[name].default, comment.strip()))
    return "\n".join(lines)


def option_line(name, default, text):
    """One line of a --help listing: --name=default, its type, what it does (a tuple is a list: a,b,c)."""
    shown = repr(default) if isinstance(default, str) and not default.isprintable() else default
    kind = type(default).__name__
    if isinstance(default, tuple):
        shown, kind = ",".join(str(v) for v in default), "list"
    return f"    {f'--{name}={shown}':<36} {kind:<6} {text}".rstrip()


def print_help(text):
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `--help | head`: the reader took what it wanted and left
        stdout_gone()


def stdout_gone():
    """After a BrokenPipeError: point stdout at /dev/null, so that the flush at exit fails quietly."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@contextmanager
def one_line_errors(*errors, ctrl_c="Ctrl-C: stopped"):
    """`with one_line_errors():` around a command's work: a ConfigError (or one of `errors`) ends the
    program with the line `error: ...` and exit status 1, Ctrl-C with the KeyboardInterrupt's own
    message (else `ctrl_c`) and status 130, and a reader that left early (`| head`) quietly."""
    try:
        yield
        sys.stdout.flush()  # here, so that a reader gone by now is caught below, not at the exit
    except (ConfigError, *errors) as e:
        sys.stderr.write(f"error: {e}\n")  # one write: torchrun's processes each print it, whole lines
        sys.exit(1)
    except KeyboardInterrupt as e:
        print(f"\n{e or ctrl_c}", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        stdout_gone()
        sys.exit(141)  # what a shell reports for a process that SIGPIPE ended


# -----------------------------------------------------------------------------
# Device and precision

DTYPES = ("auto", "float32", "bfloat16", "float16")


def pick_device(cfg):
    """cfg.device if this machine has it (else a ConfigError saying so); for 'auto' CUDA, MPS or the CPU."""
    mps = getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    kind = cfg.device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={cfg.device!r} but this machine has no CUDA GPU (or this torch has no CUDA); "
                          "use --device=cpu or --device=auto")
    if kind == "mps" and not mps:
        raise ConfigError(f"device={cfg.device!r} but MPS is not available here; use --device=cpu or --device=auto")
    if kind not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device={cfg.device!r}; use auto, cpu, cuda, cuda:N or mps")
    return cfg.device


def pick_dtype(cfg, device_type):
    """cfg.dtype; for 'auto' bfloat16 on a CUDA GPU that has it, float16 on an older one (with loss
    scaling, see train.py's GradScaler), float32 elsewhere."""
    if cfg.dtype != "auto":
        return cfg.dtype
    if device_type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def autocast(device_type, dtype):
    """The context that runs a model in dtype (a name of DTYPES): matrix products in the lower
    precision, the numerically sensitive operations (softmax, norms, the loss) in float32."""
    return nullcontext() if dtype == "float32" else torch.autocast(device_type, dtype=getattr(torch, dtype))


@dataclass
class Env:
    """Where this process computes: its device and precision, and its place among DDP processes."""
    device: str                        # 'cpu', 'cuda:0', 'mps'
    device_type: str                   # 'cpu', 'cuda' or 'mps': what autocast and GradScaler take
    dtype: str                         # 'float32', 'bfloat16' or 'float16'
    autocast: object                   # `with env.autocast:` runs the model in dtype
    ddp: bool = False
    rank: int = 0
    world: int = 1                     # the number of processes

    @property
    def master(self):
        """The process that prints, logs and writes the checkpoint."""
        return self.rank == 0


def setup_process(cfg):
    """The Env of this process, for cfg.device and cfg.dtype, its random generator seeded with cfg.seed
    plus its rank (the same initial weights everywhere, as DDP wants, but each process its own dropout).
    Under torchrun (it sets RANK) the process joins the group first: NCCL between GPUs, gloo on CPUs."""
    device = pick_device(cfg)
    ddp, rank, world = int(os.environ.get("RANK", -1)) != -1, 0, 1
    if ddp:
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
            torch.cuda.set_device(device)
    device_type = torch.device(device).type
    dtype = pick_dtype(cfg, device_type)
    torch.manual_seed(cfg.seed + rank)
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Env(device, device_type, dtype, autocast(device_type, dtype), ddp, rank, world)


def check_device(cfg, env):
    """A ConfigError if a training run's settings (cfg) cannot run where this process computes (env);
    checked before any data is read, rather than at the model's first call."""
    if env.ddp and cfg.gradient_accumulation_steps % env.world:
        raise ConfigError(f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} must be divisible "
                          f"by the {env.world} processes, which share each step's micro-batches")
    if cfg.attn not in BAND_PATTERNS or cfg.attn == "dense":  # the others never call band_attention
        return
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"  # Triton on the CPU, for tests: very slow
    if cfg.attn_backend == "triton" and env.device_type != "cuda" and not interpreted:
        raise ConfigError(f"attn_backend='triton' needs a CUDA GPU and this run is on {env.device_type}; "
                          "use --attn_backend=auto, which picks the PyTorch fallback there")
    if cfg.attn_backend == "flex" and env.device_type == "cpu" and not cfg.eval_only:
        raise ConfigError("attn_backend='flex' cannot train on the CPU (FlexAttention has no backward there); "
                          "use --attn_backend=auto, which picks the PyTorch fallback there")


def end_process(env):
    """Leave the DDP process group, if this process is in one. DDP's reference cycles keep the group,
    and gloo's threads, alive past destroy_process_group: collecting them first means no gloo thread
    still runs while the interpreter shuts down, which can abort the process."""
    if env.ddp:
        gc.collect()
        dist.destroy_process_group()


# -----------------------------------------------------------------------------
# Datasets on disk: data/NAME/train.bin and val.bin (uint16 token ids), and for char-level data
# meta.pkl (vocab_size, stoi, itos); data/NAME/prepare.py makes them (data/README.md)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
# Datasets whose prepare.py needs no download: load_dataset prepares these by itself when needed.
OFFLINE_DATASETS = ("shakespeare_char", "shakespeare", "pystdlib", "pystdlib_bytes")
GPT2_VOCAB_SIZE = 50304  # GPT-2's 50257 tokens padded to a multiple of 64: BPE datasets have no meta.pkl
QUICK_START = "python train.py config/train_shakespeare_char.py"
CPU_QUICK_START = "python train.py config/train_shakespeare_char_cpu.py"


def data_dir(dataset):
    return os.path.join(DATA, dataset)


def check_dataset(dataset):
    """A ConfigError unless data/<dataset> is a dataset: a folder with a prepare.py."""
    def is_dataset(name):
        return os.path.isfile(os.path.join(data_dir(name), "prepare.py"))
    if not is_dataset(dataset):
        known = sorted(filter(is_dataset, os.listdir(DATA)))
        raise ConfigError(f"unknown dataset {dataset!r}: there is no folder data/{dataset} with a prepare.py; "
                          f"choose one of {', '.join(known)}")


def load_dataset(dataset, prepare=True):
    """The train/val token arrays (memory-mapped) and the char vocabulary if there is one; with
    `prepare`, a missing dataset that needs no download is prepared first."""
    check_dataset(dataset)
    d = data_dir(dataset)
    if prepare and not os.path.exists(os.path.join(d, "train.bin")) and dataset in OFFLINE_DATASETS:
        print(f"data/{dataset}/train.bin is missing: running data/{dataset}/prepare.py", flush=True)
        subprocess.run([sys.executable, os.path.join(d, "prepare.py")], check=True)
    for split in ("train", "val"):
        if not os.path.exists(os.path.join(d, f"{split}.bin")):
            raise ConfigError(f"dataset {dataset!r} is not prepared: data/{dataset}/{split}.bin is missing; "
                              f"prepare it with python data/{dataset}/prepare.py (data/README.md says what it "
                              f"downloads), or start with the data that ships here: {QUICK_START} "
                              f"(on a CPU: {CPU_QUICK_START})")
    meta = None
    if os.path.exists(os.path.join(d, "meta.pkl")):
        with open(os.path.join(d, "meta.pkl"), "rb") as f:
            meta = pickle.load(f)
    splits = {s: np.memmap(os.path.join(d, f"{s}.bin"), dtype=np.uint16, mode="r") for s in ("train", "val")}
    return splits, meta


def load_data(cfg, env):
    """The dataset's splits and vocabulary. Under DDP the master alone prepares a missing dataset
    while the others wait, so no two processes write the same files."""
    if env.ddp and not env.master:
        dist.barrier()
    splits, meta = load_dataset(cfg.dataset, prepare=env.master)
    if env.ddp and env.master:
        dist.barrier()
    return splits, meta


def slow_cpu_hint(cfg, quick, iters_left):
    """A line for a training run (cfg) clearly too big for a CPU, else None. Nothing is timed (on a busy
    machine a timing cries wolf): the run's work, weights (12 * n_embd**2 a block) times tokens, is
    compared with that of the CPU config (quick), which trains in minutes on a laptop. A hundred times
    that is hours. A run whose step is no bigger than the CPU config's is told nothing: its progress line
    shows the time left."""
    def work(c, iters):
        return c.n_layer * c.n_embd ** 2 * c.batch_size * c.gradient_accumulation_steps * c.block_size * iters
    ratio = work(cfg, iters_left) / work(quick, quick.max_iters)
    if ratio < 100 or work(cfg, 1) <= work(quick, 1):
        return None
    return (f"hint: this run is {ratio:,.0f}x the training work of the CPU config, which trains in minutes on a laptop "
            f"CPU: here it takes hours or more. To watch a model learn in minutes, run: {CPU_QUICK_START}")


# -----------------------------------------------------------------------------
# Checkpoints on disk

def save_checkpoint(path, state):
    """Write to a temporary file, then rename: a crash or a Ctrl-C mid-write never leaves a broken
    ckpt.pt (the rename replaces the old file in one step), nor a stray temporary file."""
    tmp = path + ".tmp"
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path, map_location="cpu"):
    """The checkpoint train.py wrote at path; a ConfigError, in one line, for anything else."""
    if not os.path.exists(path):
        raise no_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise ConfigError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e}); "
                          "it may be truncated or from another program") from None
    model_args = ckpt.get("model_args") if isinstance(ckpt, dict) else None
    if not isinstance(model_args, dict) or "model" not in ckpt or "attn" not in ckpt or "attn" not in model_args:
        raise ConfigError(f"{path} is not a checkpoint of this project (no model / model_args / attention pattern "
                          "in it; nanoGPT's own checkpoints do not load here)")
    return ckpt


def model_of_checkpoint(ckpt, model_args, path):
    """The checkpoint's GPT with its weights, built from model_args (the checkpoint's, with the caller's
    dropout and attention backend), attending with the pattern it was last trained with: model_args
    keep the pattern it was built with, ckpt["attn"] the one in use (train.py's attn_switch_frac)."""
    try:
        model = GPT(GPTConfig(**model_args))
        model.load_state_dict(ckpt["model"])
    except (TypeError, RuntimeError) as e:  # another program's config keys, or weights of another shape
        what = " ".join(line.strip() for line in str(e).strip().splitlines()[:2])
        raise ConfigError(f"{path}: its model does not fit this project's GPT ({what[:300]})") from None
    if ckpt["attn"] != model.attn:
        model.set_attn(ckpt["attn"])
    return model


def no_checkpoint(path):
    return ConfigError(f"no checkpoint at {path}: train first (python train.py ...) or check --out_dir")


# -----------------------------------------------------------------------------
# A long run: the console, Ctrl-C and log.csv

class Console:
    """What a run prints: log lines, and during a long wait (an evaluation, the iterations between
    two log lines) a progress line with the time left, so that a slow machine never looks stuck.
    On a terminal the progress line appears after a second of silence and is rewritten in place (\\r),
    then erased by the next log line; in a file or a pipe it is a plain line after QUIET_S seconds
    of silence, so a log stays short. Only the master process prints (enabled)."""
    QUIET_S = 5.0

    def __init__(self, enabled):
        self.enabled, self.tty = enabled, sys.stdout.isatty()
        self.last_output = time.time()
        self.width = 0  # characters of the progress line on the terminal now; 0: none shown

    def say(self, text):
        if not self.enabled:
            return
        if self.width:
            print("\r" + " " * self.width + "\r", end="")
            self.width = 0
        print(text, flush=True)
        self.last_output = time.time()

    def progress(self, text, seconds_left):
        wait = (0.25 if self.width else 1.0) if self.tty else self.QUIET_S
        if not self.enabled or time.time() - self.last_output < wait:
            return
        text = f"{text}, about {duration(seconds_left)} left"
        if self.tty:
            print("\r" + text.ljust(self.width), end="", flush=True)
            self.width = max(self.width, len(text))
        else:
            print(text, flush=True)
        self.last_output = time.time()


def duration(seconds):
    """'2h05m', '3m20s' or '12s'."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class CtrlC:
    """`with CtrlC(env) as ctrl_c:` makes Ctrl-C (SIGINT) a request: the loop asks ctrl_c.stop() where
    the state is whole (between iterations, between evaluation batches) and then saves a checkpoint. A
    second Ctrl-C raises KeyboardInterrupt wherever the run is, for a user who will not wait. env is the
    process's Env: under DDP the processes agree on stopping, and only the master says so."""

    def __init__(self, env):
        self.env, self.requested, self.why = env, False, "Ctrl-C"

    def request(self, why):
        """Ask the loop to stop as Ctrl-C does, for another reason (the time limit), named in its message."""
        self.requested, self.why = True, why

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self.on_sigint)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)

    def on_sigint(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.env.master:
            # on stderr: the run prints on stdout, and a print interrupted by this one would fail
            print("\nCtrl-C: stopping after this training step or evaluation batch "
                  "(Ctrl-C again to quit at once, without saving)", file=sys.stderr, flush=True)

    def stop(self):
        """Whether to stop here. Under DDP every process calls this at the same point and all stop if
        any got Ctrl-C: a terminal sends it to every process, but not at the same instant."""
        if self.env.ddp:
            flag = torch.tensor(float(self.requested), device=self.env.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self.requested = bool(flag.item())
        return self.requested


class Steps:
    """The training steps' losses, read one step late: reading a loss waits for the device, so the loop
    reads it once the next step is queued (the device has work meanwhile), and before anything that
    needs good weights (an evaluation, a checkpoint). Each loss is checked, kept and logged, with the
    progress line's time left. run and cfg are train.py's Run and TrainConfig."""

    def __init__(self, run, cfg, env, console, log, ckpt_path):
        self.run, self.cfg, self.env, self.console, self.log, self.ckpt_path = run, cfg, env, console, log, ckpt_path
        self.pending = None  # (iter, loss, grad_norm, lr, seconds to queue it) of the step not read yet
        self.history, self.seconds = [], 0.0  # (iter, loss) of the steps read, and the loop's time on them

    def queued(self, it, loss, grad_norm, lr, queued_s):
        """Step `it` is queued (in queued_s seconds): read the step before it; this one waits."""
        self.read()
        self.pending = (it, loss, grad_norm, lr, queued_s)

    def read(self):
        """Read, check and log the pending step, if there is one."""
        if self.pending is None:
            return
        (it, loss, grad_norm, lr, queued_s), self.pending = self.pending, None
        cfg, t_wait = self.cfg, time.time()
        loss, grad_norm = float(loss), float(grad_norm)
        dt = queued_s + time.time() - t_wait  # the loop's time on the step: queueing it, then waiting for it
        check_finite("loss", loss, it, self.ckpt_path)
        if not self.run.scaler.is_enabled():  # float16's scaler skips a step whose gradient overflowed
            # a finite loss with a NaN gradient made NaN weights, which a stop right now would save
            check_finite("gradient norm", grad_norm, it, self.ckpt_path)
        self.history.append((it, loss))
        self.seconds += dt
        if it % cfg.log_interval == 0:
            tokens_per_s = cfg.gradient_accumulation_steps * cfg.batch_size * self.run.model.config.block_size / dt
            mfu = self.run.model.estimate_mfu(cfg.batch_size * cfg.gradient_accumulation_steps // self.env.world,
                                              dt, peak_flops=cfg.peak_flops or None)
            self.console.say(f"iter {it}: loss {loss:.4f}, lr {lr:.2e}, {dt * 1000:.1f} ms/iter, {tokens_per_s:,.0f} "
                             f"tok/s, mfu {'n/a' if mfu is None else f'{mfu:.1%}'}, grad norm {grad_norm:.3f}")
            self.log.row(iter=it, train_loss=f"{loss:.5f}", lr=lr, ms_per_iter=f"{dt * 1000:.2f}",
                         tokens_per_s=f"{tokens_per_s:.0f}", mfu="" if mfu is None else f"{mfu:.4f}",
                         elapsed_s=f"{self.run.elapsed():.1f}", grad_norm=f"{grad_norm:.6g}")
        per_iter = self.seconds / len(self.history)
        self.console.progress(f"training: iter {it}/{cfg.max_iters}, {per_iter:.2f} s/iter",
                              per_iter * (cfg.max_iters - it - 1))


def check_finite(what, value, iter_num, ckpt_path):
    """Stop on a NaN or infinite loss (or gradient norm), before a checkpoint saves the weights that made it."""
    if not math.isfinite(value):
        raise FloatingPointError(
            f"{what} became {value} at iter {iter_num}; stopped without saving. The last good checkpoint "
            f"is kept in {ckpt_path}. Try a lower learning_rate, grad_clip, or dtype=float32")


class CsvLog:
    """out_dir/log.csv: a row per logged iteration and per evaluation. A run from scratch starts the file
    afresh (a second run in the same out_dir would otherwise mix its rows with the first one's); a resumed
    run appends, continuing it. `with CsvLog(None)` writes nothing (DDP processes but the master)."""
    COLUMNS = ["iter", "train_loss", "val_loss", "lr", "ms_per_iter", "tokens_per_s", "mfu", "elapsed_s",
               "grad_norm"]

    def __init__(self, path, append=True):
        self.file = open(path or os.devnull, "a" if append else "w", newline="")
        self.writer = csv.DictWriter(self.file, self.COLUMNS, restval="")
        if self.file.tell() == 0:
            self.writer.writeheader()

    def row(self, **values):
        self.writer.writerow(values)
        self.file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()
