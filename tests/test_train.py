"""train.py and sample.py as a user runs them: exact resume, Ctrl-C, NaN, every bad input, --help,
and the progress shown while a slow machine works."""
import csv
import dataclasses
import os
import pty
import select
import shlex
import signal
import subprocess
import sys
import time
import types

import pytest
import torch

import sample
import train
import utils
from model import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--dataset=shakespeare_char", "--device=cpu", "--compile=False", "--batch_size=4",
        "--block_size=32", "--n_layer=2", "--n_head=4", "--n_embd=32", "--eval_iters=2",
        "--gradient_accumulation_steps=2", "--warmup_iters=3", "--lr_decay_iters=20",
        "--learning_rate=3e-3", "--dropout=0.1", "--log_interval=100"]


def patch_time(monkeypatch, clock):
    """A fake clock (an object with a .time()) for train.py and for utils.py's loop log and console."""
    for module in (train, utils):
        monkeypatch.setattr(module, "time", clock)


def run_cli(args, script="train.py", timeout=300):
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


class Cli:
    """train.py started in a subprocess, its stdout and stderr read together as they come, from a pipe
    or (tty=True) from a pseudo-terminal, which is what a user at a terminal sees."""

    def __init__(self, args, tty=False):
        self.fd, out = pty.openpty() if tty else os.pipe()
        self.p = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, stdout=out, stderr=out)
        os.close(out)
        self.text = ""

    def _read(self, timeout):
        """More output (False at its end) within timeout seconds."""
        if not select.select([self.fd], [], [], timeout)[0]:
            return True
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # a pseudo-terminal whose process has exited
            chunk = b""
        self.text += chunk.decode(errors="replace")
        return bool(chunk)

    def fail(self, why):
        self.p.kill()  # a failed test leaves no training running
        raise AssertionError(f"{why}; its output:\n{self.text}")

    def wait_for(self, text, timeout=60):
        deadline = time.time() + timeout
        while text not in self.text:
            if time.time() > deadline or not self._read(deadline - time.time()):
                self.fail(f"no {text!r} within {timeout} s")

    def ctrl_c(self):
        self.p.send_signal(signal.SIGINT)

    def finish(self, timeout=60):
        """The exit status, once the output has ended."""
        deadline = time.time() + timeout
        while self._read(max(0.0, deadline - time.time())):
            if time.time() > deadline:
                self.fail(f"still running after {timeout} s")
        os.close(self.fd)
        return self.p.wait(timeout=10)


def test_resume_continues_exactly(tmp_path):
    # 20 iterations straight, and 10 + resume + 10, give bit-identical losses (dropout on, so the
    # RNG state and the data order must both be restored)
    straight = train.train(train.parse_args(TINY + [f"--out_dir={tmp_path}/a", "--max_iters=20", "--eval_interval=10"]))
    first = train.train(train.parse_args(TINY + [f"--out_dir={tmp_path}/b", "--max_iters=10", "--eval_interval=10"]))
    ckpt = torch.load(f"{tmp_path}/b/ckpt.pt", weights_only=False)
    assert ckpt["iter_num"] == 10 and isinstance(ckpt["best_val_loss"], float)
    assert {"model", "optimizer", "model_args", "config"} <= set(ckpt)
    second = train.train(train.parse_args(TINY + [f"--out_dir={tmp_path}/b", "--max_iters=20",
                                                  "--eval_interval=10", "--init_from=resume"]))
    assert [it for it, _ in straight] == list(range(20))
    assert straight == first + second
    assert straight[-1][1] < straight[0][1]


def test_float16_resume_keeps_the_loss_scale(tmp_path):
    # float16 scales the loss (GradScaler), and the scale adapts: an overflow halves it and skips that
    # step. A resume that started again from the initial scale would skip steps the straight run took.
    fp16 = TINY + ["--dtype=float16", "--batch_size=1", "--block_size=4", "--gradient_accumulation_steps=1"]
    straight = train.train(train.parse_args(fp16 + [f"--out_dir={tmp_path}/a", "--max_iters=12", "--eval_interval=6"]))
    first = train.train(train.parse_args(fp16 + [f"--out_dir={tmp_path}/b", "--max_iters=6", "--eval_interval=6"]))
    scale = torch.load(f"{tmp_path}/b/ckpt.pt", weights_only=False)["scaler"]["scale"]
    assert scale < torch.amp.GradScaler("cpu").get_scale()  # it has changed: the test sees a difference
    second = train.train(train.parse_args(fp16 + [f"--out_dir={tmp_path}/b", "--max_iters=12", "--eval_interval=6",
                                                  "--init_from=resume"]))
    assert straight == first + second


def test_a_run_from_scratch_starts_its_own_log_and_a_resumed_run_appends(tmp_path):
    def logged():
        with open(tmp_path / "log.csv", newline="") as f:
            return [(r["iter"], "val" if r["val_loss"] else "train") for r in csv.DictReader(f)]
    args = TINY + [f"--out_dir={tmp_path}", "--eval_interval=3", "--log_interval=1"]
    train.train(train.parse_args(args + ["--max_iters=4"]))
    before = logged()
    # another run from scratch in the same out_dir would replace the first one's checkpoint: refused,
    # before it touches anything
    with pytest.raises(ConfigError, match="ckpt.pt already holds a run: continue it with --init_from=resume"):
        train.train(train.parse_args(args + ["--max_iters=2"]))
    assert logged() == before and torch.load(tmp_path / "ckpt.pt", weights_only=False)["iter_num"] == 4
    os.remove(tmp_path / "ckpt.pt")  # as if the first run had stopped before writing one: its log stays
    train.train(train.parse_args(args + ["--max_iters=2"]))
    first = [("0", "val"), ("0", "train"), ("1", "train"), ("2", "val")]
    assert logged() == first
    train.train(train.parse_args(args + ["--max_iters=4", "--init_from=resume"]))
    assert logged() == first + [("2", "train"), ("3", "val"), ("3", "train"), ("4", "val")]


def test_a_steps_loss_is_read_once_the_next_step_is_queued(tmp_path, monkeypatch):
    # Reading a loss waits for the device to finish its step; read at once, it would leave a GPU idle
    # while the host queues the next step. So each loss is read after the next step is queued, and
    # every pending loss is read (a NaN stops the run) before an evaluation and its checkpoint. A
    # step's ms/iter is its queueing plus the wait for it: with a clock that moves one second a step
    # (as a CPU's would: its steps run while they are queued), every step logs 1000 ms, also the first
    # one after an evaluation, whose loss is read only after the next step has run.
    events, real_step, real_checkpoint = [], train.train_step, train.checkpoint
    clock = {"now": 0.0}

    class Loss:  # a step's loss tensor, its reading recorded
        def __init__(self, it, value):
            self.it, self.value = it, value

        def __float__(self):
            events.append(("read", self.it))
            return float(self.value)

    def step(model, run, *a):
        events.append(("step", run.iter_num))
        clock["now"] += 1.0
        loss, grad_norm = real_step(model, run, *a)
        return Loss(run.iter_num, loss), grad_norm

    def checkpoint(run, *a):
        events.append(("save", run.iter_num))
        real_checkpoint(run, *a)

    monkeypatch.setattr(train, "train_step", step)
    monkeypatch.setattr(train, "checkpoint", checkpoint)
    patch_time(monkeypatch, types.SimpleNamespace(time=lambda: clock["now"]))
    history = train.train(train.parse_args(TINY + [f"--out_dir={tmp_path}", "--max_iters=6", "--eval_interval=3",
                                                   "--log_interval=1"]))
    assert events == [("save", 0), ("step", 0), ("step", 1), ("read", 0), ("step", 2), ("read", 1), ("read", 2),
                      ("save", 3), ("step", 3), ("step", 4), ("read", 3), ("step", 5), ("read", 4), ("read", 5),
                      ("save", 6)]
    assert [it for it, _ in history] == list(range(6))
    with open(tmp_path / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["iter"], r["ms_per_iter"]) for r in rows if r["ms_per_iter"]] == [(str(i), "1000.00") for i in range(6)]


def test_a_resumed_runs_log_goes_on_with_the_elapsed_time_of_the_run_before(tmp_path, monkeypatch):
    # log.csv's elapsed_s is the training loop's time over the whole run, so that a plot of loss
    # against time does not jump back where a run was resumed. A clock that moves one second a step,
    # and starts afresh (far off) for the resumed process:
    clock, real_step = {"now": 0.0}, train.train_step

    def step(*a):
        clock["now"] += 1.0
        return real_step(*a)

    monkeypatch.setattr(train, "train_step", step)
    patch_time(monkeypatch, types.SimpleNamespace(time=lambda: clock["now"]))
    args = TINY + [f"--out_dir={tmp_path}", "--eval_interval=2", "--log_interval=1"]
    train.train(train.parse_args(args + ["--max_iters=4"]))
    clock["now"] = 5000.0
    train.train(train.parse_args(args + ["--max_iters=8", "--init_from=resume"]))
    with open(tmp_path / "log.csv", newline="") as f:
        rows = [(int(r["iter"]), float(r["elapsed_s"]), bool(r["val_loss"])) for r in csv.DictReader(f)]
    # a step's row is logged once the next step has run (1 s later); an evaluation costs no clock time;
    # the resumed process evaluates its first iteration again (the second (4, 4.0) row) and goes on
    assert rows == [(0, 0.0, True), (0, 2.0, False), (1, 2.0, False), (2, 2.0, True), (2, 4.0, False),
                    (3, 4.0, False), (4, 4.0, True),
                    (4, 4.0, True), (4, 6.0, False), (5, 6.0, False), (6, 6.0, True), (6, 8.0, False),
                    (7, 8.0, False), (8, 8.0, True)]


def test_time_limit_stops_with_a_checkpoint_and_resume_finishes_exactly(tmp_path, monkeypatch, capsys):
    # experiments/compare.py's --max_minutes rests on this: a clock that moves one second per training step stops
    # the run after the step that passes time_limit_s, with a checkpoint; resume then ends as a
    # straight run does
    args = TINY + ["--max_iters=10", "--eval_interval=5"]
    straight = train.train(train.parse_args(args + [f"--out_dir={tmp_path}/a"]))
    clock, real_step = {"now": 0.0}, train.train_step

    def step(*a):
        clock["now"] += 1.0
        return real_step(*a)

    patch_time(monkeypatch, types.SimpleNamespace(time=lambda: clock["now"]))
    monkeypatch.setattr(train, "train_step", step)
    first = train.train(train.parse_args(args + [f"--out_dir={tmp_path}/b", "--time_limit_s=3.5"]))
    monkeypatch.undo()
    assert f"time_limit_s=3.5: saved {tmp_path}/b/ckpt.pt at iter 4" in capsys.readouterr().out
    assert torch.load(f"{tmp_path}/b/ckpt.pt", weights_only=False)["iter_num"] == 4
    second = train.train(train.parse_args(args + [f"--out_dir={tmp_path}/b", "--init_from=resume"]))
    assert [i for i, _ in first] == list(range(4)) and first + second == straight
    with pytest.raises(ConfigError, match="time_limit_s must be >= 0"):
        train.parse_args(["--time_limit_s=-1"])


def test_config_file_and_overrides(tmp_path):
    cfg_file = tmp_path / "c.py"
    cfg_file.write_text("import math\nbatch_size = 7\nlearning_rate = 1\nattn = 'dense'\n")
    cfg = train.parse_args([str(cfg_file), "--batch_size=9", "--compile=false"])
    assert (cfg.batch_size, cfg.learning_rate, cfg.attn, cfg.compile) == (9, 1.0, "dense", False)


@pytest.mark.parametrize("args,msg", [
    (["--bogus=1"], "unknown config key 'bogus'"),
    (["--max_iters=ten"], "--max_iters expects int, got 'ten'"),
    (["--compile=maybe"], "--compile expects True or False"),
    (["--max_iters"], "must look like --key=value"),
    (["config/no_such_file.py"], "config file 'config/no_such_file.py' not found"),
    (["--init_from=gpt2"], "init_from must be one of scratch, resume, got 'gpt2'"),
])
def test_bad_arguments(args, msg):
    with pytest.raises(ConfigError, match=msg):
        train.parse_args(args)


def test_bad_config_file(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("max_iters = '10'\n")
    with pytest.raises(ConfigError, match="max_iters must be int"):
        train.parse_args([str(f)])
    f.write_text("n_layers = 4\n")
    with pytest.raises(ConfigError, match="unknown config key 'n_layers'"):
        train.parse_args([str(f)])


@pytest.mark.parametrize("args,msg", [
    (["--bogus=1"], "unknown config key 'bogus'"),
    (["--n_embd=30", "--n_head=4"], "n_embd=30 is not divisible by n_head=4"),
    (["--block_size=3", "--n_head=4"], "block_size=3 < n_head=4"),
    (["--attn=flash"], "unknown attn='flash'"),
    (["--attn_backend=cuda"], "unknown attn_backend='cuda'"),
    (["--device=tpu"], "unknown device='tpu'"),
    (["--dataset=no_such_data"], "unknown dataset 'no_such_data': there is no folder data/no_such_data"),
    (["--dataset=no_such_data", "--attn=spp"], "unknown attn='spp'"),
])
def test_cli_errors_are_one_line(tmp_path, args, msg):
    r = run_cli(TINY + [f"--out_dir={tmp_path}"] + args)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], r.stderr


@pytest.mark.parametrize("arg,msg", [
    ("--attn=spp", "unknown attn='spp'; choose one of dense, sp,"),
    ("--n_head=7", "n_embd=768 is not divisible by n_head=7"),
    ("--block_size=0", "block_size must be a positive integer, got 0"),
])
def test_settings_are_checked_before_the_dataset(arg, msg):
    # no config: the default dataset (fineweb_edu) is not prepared here, so a check made after the
    # dataset would report that instead
    r = run_cli([arg])
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [f"error: {r.stderr.strip()[7:]}"], r.stderr
    assert msg in r.stderr and "prepare" not in r.stderr, r.stderr


@pytest.mark.skipif(os.path.exists(os.path.join(ROOT, "data", "fineweb_edu", "train.bin")),
                    reason="fineweb_edu is prepared here: `python train.py` would train GPT-2 small")
def test_no_arguments_names_the_prepare_script_and_the_quick_start():
    r = run_cli([])
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "dataset 'fineweb_edu' is not prepared" in r.stderr
    assert "python data/fineweb_edu/prepare.py" in r.stderr
    assert "python train.py config/train_shakespeare_char.py" in r.stderr


def test_help_lists_every_setting_with_its_default(capsys):
    r = run_cli(["--help"])
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.startswith("usage: python train.py")
    lines = r.stdout.splitlines()
    for f in dataclasses.fields(train.TrainConfig):
        line = next((x for x in lines if x.split() and x.split()[0] == f"--{f.name}={f.default}"), None)
        assert line is not None and line.split()[1] == f.type.__name__, f.name
    assert any(x.split()[:2] == ["--batch_size=12", "int"] for x in lines)
    train.main(["config/train_shakespeare_char.py", "-h"])
    assert capsys.readouterr().out == r.stdout
    sample.main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python sample.py")
    assert all(f"--{f.name}=" in out for f in dataclasses.fields(sample.SampleConfig)) and "--num_samples=10 " in out


def test_slow_cpu_run_gets_a_hint():
    # the baby GPT is about 700x the CPU config's training work (weights x tokens): hours on a CPU
    big = train.parse_args(["config/train_shakespeare_char.py"])
    small = train.parse_args(["config/train_shakespeare_char_cpu.py"])
    hint = utils.slow_cpu_hint(big, small, iters_left=big.max_iters)
    assert hint is not None and "python train.py config/train_shakespeare_char_cpu.py" in hint
    assert utils.slow_cpu_hint(big, small, iters_left=50) is None  # a resume with little left
    assert utils.slow_cpu_hint(small, small, iters_left=small.max_iters) is None
    # the CPU config's sizes, however long: the progress line tells the time left, no config to advise
    assert utils.slow_cpu_hint(small, small, iters_left=1000 * small.max_iters) is None
    assert [utils.duration(s) for s in (4.4, 200, 7500)] == ["4s", "3m20s", "2h05m"]


def test_the_cpu_config_on_a_busy_machine_gets_no_hint(tmp_path, monkeypatch, capsys):
    # A busy machine runs everything slowly: here a clock that moves 100 s at every reading. The CPU
    # config trains in minutes on a quiet laptop; no hint may tell it that it needs hours.
    clock = {"now": 0.0}

    def busy():
        clock["now"] += 100.0
        return clock["now"]

    patch_time(monkeypatch, types.SimpleNamespace(time=busy))
    # the config's 2000 iterations, stopped by the time limit before the first (the clock has moved)
    train.train(train.parse_args(["config/train_shakespeare_char_cpu.py", f"--out_dir={tmp_path}", "--eval_iters=1",
                                  "--time_limit_s=1"]))
    out = capsys.readouterr().out
    assert "time_limit_s=1: stopped before the first training step" in out and "hint" not in out, out


def test_ctrl_c_during_the_first_evaluation_stops_it_at_once(tmp_path):
    # a long evaluation (200,000 batches); Ctrl-C once its progress shows (a plain line in a pipe)
    cli = Cli(TINY + [f"--out_dir={tmp_path}", "--eval_iters=100000", "--max_iters=10"])
    cli.wait_for("evaluating: batch ")
    t = time.time()
    cli.ctrl_c()
    assert cli.finish() == 0, cli.text
    assert time.time() - t < 10, "the evaluation went on after Ctrl-C"
    assert "Ctrl-C: stopped before the first training step: nothing to save" in cli.text
    # no evaluation finished, so there is no best val loss to tell
    assert "done: 0 iterations, no evaluation finished, " in cli.text and "best val loss" not in cli.text, cli.text
    assert "no checkpoint written" in cli.text and "Traceback" not in cli.text
    assert not os.path.exists(tmp_path / "ckpt.pt")


def test_progress_is_one_line_rewritten_in_place_on_a_terminal(tmp_path):
    cli = Cli(TINY + [f"--out_dir={tmp_path}", "--eval_iters=100000", "--max_iters=10"], tty=True)
    cli.wait_for("\revaluating: batch ")
    cli.wait_for(" left\revaluating: batch ")  # rewritten, on the same line
    cli.ctrl_c()
    assert cli.finish() == 0, cli.text
    assert "\nevaluating" not in cli.text.replace("\r\n", "\n")


def test_ctrl_c_during_an_evaluation_saves_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    args = TINY + ["--max_iters=12", "--eval_interval=6", "--eval_iters=100"]
    straight = train.train(train.parse_args(args + [f"--out_dir={tmp_path}/a"]))
    # Ctrl-C at the 5th batch of the evaluation at iter 6 (the second evaluation)
    real_evaluate, real_get_batch, seen = train.evaluate, train.get_batch, {"evaluations": 0, "batches": 0}

    def evaluate(*a):
        seen["evaluations"] += 1
        return real_evaluate(*a)

    def get_batch(*a):
        if seen["evaluations"] == 2:
            seen["batches"] += 1
            if seen["batches"] == 5:
                os.kill(os.getpid(), signal.SIGINT)
        return real_get_batch(*a)

    monkeypatch.setattr(train, "evaluate", evaluate)
    monkeypatch.setattr(train, "get_batch", get_batch)
    first = train.train(train.parse_args(args + [f"--out_dir={tmp_path}/b"]))
    monkeypatch.undo()
    assert seen["batches"] == 5  # the batch in progress finished, no other began
    assert f"Ctrl-C: saved {tmp_path}/b/ckpt.pt at iter 6" in capsys.readouterr().out
    assert torch.load(f"{tmp_path}/b/ckpt.pt", weights_only=False)["iter_num"] == 6
    second = train.train(train.parse_args(args + [f"--out_dir={tmp_path}/b", "--init_from=resume"]))
    assert [i for i, _ in first] == list(range(6)) and first + second == straight


def test_second_ctrl_c_quits_at_once_with_one_line(tmp_path):
    # a bigger model's step takes long enough (about a second on 2 cores) for the second Ctrl-C to
    # land in the step the first one asked to finish
    big = ["--batch_size=32", "--block_size=128", "--n_embd=128", "--eval_iters=1", "--log_interval=1",
           "--max_iters=1000", "--eval_interval=1000"]
    cli = Cli(TINY + big + [f"--out_dir={tmp_path}"])
    cli.wait_for("iter 0:")
    cli.ctrl_c()
    cli.wait_for("Ctrl-C again to quit at once")
    cli.ctrl_c()
    assert cli.finish() == 130, cli.text
    assert "Traceback" not in cli.text and "KeyboardInterrupt" not in cli.text
    last = cli.text.strip().splitlines()[-1]
    assert last == f"Ctrl-C again: stopped at once, without saving; checkpoint of iter 0 in {tmp_path}/ckpt.pt"
    assert torch.load(tmp_path / "ckpt.pt", weights_only=False)["iter_num"] == 0
    assert not os.path.exists(tmp_path / "ckpt.pt.tmp")


def test_resume_says_which_settings_the_checkpoint_overrides_and_refuses_another_dataset(tmp_path, capsys,
                                                                                         monkeypatch):
    args = TINY + [f"--out_dir={tmp_path}", "--max_iters=2", "--eval_interval=2"]
    train.train(train.parse_args(args))
    capsys.readouterr()
    train.train(train.parse_args(args + ["--max_iters=3", "--init_from=resume"]))  # the same settings
    assert "not used" not in capsys.readouterr().out
    train.train(train.parse_args(args + ["--max_iters=4", "--init_from=resume", "--n_layer=3", "--attn=dense"]))
    out = capsys.readouterr().out
    assert ("settings that differ from it are not used: n_layer=3 (checkpoint: 2), attn=dense (checkpoint: sp)"
            in out), out
    assert "model: 0.0" in out and "attn=sp" in out  # the checkpoint's model trained on
    # another dataset is refused before its data is read (or prepared)
    monkeypatch.setattr(train, "load_data", lambda *a: pytest.fail("the data was read before the check"))
    with pytest.raises(ConfigError, match=r"was trained on dataset 'shakespeare_char', not 'shakespeare': a resume "
                                          r"continues on the run's own data \(--dataset=shakespeare_char"):
        train.train(train.parse_args(args + ["--max_iters=5", "--init_from=resume", "--dataset=shakespeare"]))


def test_an_out_dir_with_a_checkpoint_is_refused_by_training_only(tmp_path, monkeypatch):
    # Reading settings that name such an out_dir is fine (experiments/compare.py and the tools parse configs
    # whose out_dir a user has trained into); only a run from scratch into it is refused.
    import compare
    (tmp_path / "ckpt.pt").write_bytes(b"a run's checkpoint")
    monkeypatch.setattr(train, "load_data", lambda *a: pytest.fail("the data was read before the check"))
    cfg = train.parse_args(TINY + [f"--out_dir={tmp_path}"])
    monkeypatch.chdir(tmp_path)  # experiments/compare.py checks its settings with train.py's default out_dir, 'out'
    os.makedirs("out")
    (tmp_path / "out" / "ckpt.pt").write_bytes(b"a run's checkpoint")
    compare.check_options(compare.Options(), dict(compare.TRAIN_DEFAULTS))
    with pytest.raises(ConfigError, match="ckpt.pt already holds a run"):
        train.train(cfg)
    assert (tmp_path / "ckpt.pt").read_bytes() == b"a run's checkpoint"


def test_a_mistyped_dataset_is_named_before_the_out_dir(tmp_path):
    # a learner's typo, into an out_dir that holds a run (or, for a resume, none): the wrong setting is
    # named, not the out_dir it never got to
    (tmp_path / "run" / "ckpt.pt").parent.mkdir()
    (tmp_path / "run" / "ckpt.pt").write_bytes(b"a run's checkpoint")
    for args in ([f"--out_dir={tmp_path}/run"], [f"--out_dir={tmp_path}/none", "--init_from=resume"]):
        r = run_cli(["config/train_shakespeare_char_cpu.py", "--dataset=shakespear_char", *args])
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
        assert r.stderr.startswith("error: unknown dataset 'shakespear_char'") and "shakespeare_char" in r.stderr


def test_eval_only_evaluates_a_checkpoint_saved_between_evaluations(tmp_path, capsys):
    # a Ctrl-C or a time limit saves at any iteration, not only at an evaluation's
    train.train(train.parse_args(TINY + [f"--out_dir={tmp_path}", "--max_iters=3", "--eval_interval=2"]))
    capsys.readouterr()
    train.train(train.parse_args(TINY + [f"--out_dir={tmp_path}", "--max_iters=10", "--eval_interval=2",
                                         "--eval_only=True", "--init_from=resume"]))
    out = capsys.readouterr().out
    assert "step 3: train loss" in out and "done: evaluated the checkpoint of iter 3 (trained nothing)" in out, out


@pytest.mark.parametrize("args,msg", [
    (["--eval_only=True"], "eval_only evaluates a trained model: add --init_from=resume"),
    (["--attn_backend=triton"], "attn_backend='triton' needs a CUDA GPU and this run is on cpu"),
    (["--attn_backend=flex"], "attn_backend='flex' cannot train on the CPU"),
])
def test_settings_that_cannot_work_on_this_machine_stop_before_the_data(tmp_path, monkeypatch, args, msg):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(train, "load_data", lambda *a: pytest.fail("the data was read before the check"))
    with pytest.raises(ConfigError, match=msg):
        train.train(train.parse_args(TINY + [f"--out_dir={tmp_path}"] + args))
    assert not os.path.exists(tmp_path / "log.csv")


def test_dense_runs_sdpa_whatever_the_attn_backend(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    history = train.train(train.parse_args(TINY + [f"--out_dir={tmp_path}", "--attn=dense", "--attn_backend=triton",
                                                   "--max_iters=1"]))
    assert len(history) == 1


def test_missing_and_corrupt_checkpoint(tmp_path):
    r = run_cli(TINY + [f"--out_dir={tmp_path}", "--init_from=resume"])
    assert r.returncode == 1 and "no checkpoint at" in r.stderr
    with pytest.raises(ConfigError, match="no checkpoint at"):  # said before the data is read or prepared
        train.check_config(train.parse_args(TINY + [f"--out_dir={tmp_path}", "--init_from=resume"]))
    (tmp_path / "ckpt.pt").write_bytes(b"not a checkpoint")
    r = run_cli(TINY + [f"--out_dir={tmp_path}", "--init_from=resume"])
    assert r.returncode == 1 and "not a readable checkpoint" in r.stderr and len(r.stderr.splitlines()) == 1
    r = run_cli([f"--out_dir={tmp_path}"], script="sample.py")
    assert r.returncode == 1 and "not a readable checkpoint" in r.stderr and len(r.stderr.splitlines()) == 1


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path):
    # a huge learning rate blows the weights up after the first step
    cfg = train.parse_args(TINY + [f"--out_dir={tmp_path}", "--max_iters=50", "--eval_interval=1",
                                   "--learning_rate=1e30", "--warmup_iters=0"])
    with pytest.raises(FloatingPointError, match="last good checkpoint is kept"):
        train.train(cfg)
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert not os.path.exists(tmp_path / "ckpt.pt.tmp")


def test_a_nan_gradient_stops_before_a_stop_saves_its_weights(tmp_path, monkeypatch):
    # A step whose loss is finite but whose gradient is NaN leaves NaN weights (clipping multiplies every
    # gradient by NaN). Here the time limit stops the run right after that step: its checkpoint would
    # replace the last good one with those weights, so the gradient norm is checked too.
    clock, real_step = {"now": 0.0}, train.train_step

    def step(model, run, *rest):
        clock["now"] += 1.0
        if run.iter_num != 3:
            return real_step(model, run, *rest)
        hook = next(run.model.parameters()).register_hook(lambda g: torch.full_like(g, float("nan")))
        loss, grad_norm = real_step(model, run, *rest)
        hook.remove()
        assert loss.isfinite() and not grad_norm.isfinite()
        return loss, grad_norm

    patch_time(monkeypatch, types.SimpleNamespace(time=lambda: clock["now"]))
    monkeypatch.setattr(train, "train_step", step)
    cfg = train.parse_args(TINY + [f"--out_dir={tmp_path}", "--max_iters=10", "--eval_interval=5", "--time_limit_s=3.5"])
    with pytest.raises(FloatingPointError, match="gradient norm became nan at iter 3"):
        train.train(cfg)
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert ckpt["iter_num"] == 0 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_ctrl_c_saves_and_resumes(tmp_path):
    p = subprocess.Popen([sys.executable, "-u", "train.py", *TINY, f"--out_dir={tmp_path}", "--max_iters=100000",
                          "--eval_interval=100000", "--log_interval=1"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    for line in p.stdout:
        if line.startswith("iter 5:") or time.time() > deadline:
            break
    p.send_signal(signal.SIGINT)
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 0, out
    assert "continue with --init_from=resume" in out
    it = torch.load(tmp_path / "ckpt.pt", weights_only=False)["iter_num"]
    assert it >= 6
    r = run_cli(TINY + [f"--out_dir={tmp_path}", "--init_from=resume", f"--max_iters={it + 2}",
                        "--eval_interval=100000", "--log_interval=1"])
    assert r.returncode == 0 and f"iter {it}:" in r.stdout and f"iter {it + 1}:" in r.stdout, r.stderr


def test_sample_from_trained_checkpoint(tmp_path):
    train.train(train.parse_args(TINY + [f"--out_dir={tmp_path}", "--max_iters=2"]))
    r = run_cli([f"--out_dir={tmp_path}", "--start=ROMEO:", "--num_samples=2", "--max_new_tokens=40",
                 "--device=cpu"], script="sample.py")
    assert r.returncode == 0, r.stderr
    samples = r.stdout.split("---------------")
    assert len(samples) == 3 and all(s.strip().startswith("ROMEO:") for s in samples[:2])
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("To be, or not to be" * 10)  # longer than block_size: cropped for the model
    r = run_cli([f"--out_dir={tmp_path}", f"--start=FILE:{prompt}", "--num_samples=1", "--max_new_tokens=5",
                 "--device=cpu"], script="sample.py")
    assert r.returncode == 0 and r.stdout.startswith("To be, or not to be"), r.stderr
    r = run_cli([f"--out_dir={tmp_path}", "--top_k=0", "--num_samples=1", "--max_new_tokens=5", "--device=cpu"],
                script="sample.py")  # 0: no top-k cut
    assert r.returncode == 0 and len(r.stdout) > 5, r.stderr
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("naïve".encode("latin-1"))
    for arg, msg in (("--start=", "the prompt is empty"),
                     ("--start=naïve", "outside this char-level model's vocabulary: 'ï'"),
                     ("--start=FILE:/no/such", "prompt file '/no/such' not found"),
                     (f"--start=FILE:{latin1}", "is not UTF-8 text"), ("--dtype=fp16", "--dtype must be one of"),
                     ("--top_k=-1", "--top_k must be >= 0"), ("--temperature=0", "--temperature must be a finite"),
                     ("--temperature=nan", "--temperature must be a finite"),  # it sampled id 0 every time
                     ("--temperature=inf", "--temperature must be a finite")):
        r = run_cli([f"--out_dir={tmp_path}", arg, "--device=cpu"], script="sample.py")
        assert r.returncode == 1 and msg in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    # a device with an index: the checkpoint still loads (torch.load knows no "cpu:0")
    r = run_cli([f"--out_dir={tmp_path}", "--num_samples=1", "--max_new_tokens=5", "--device=cpu:0"],
                script="sample.py")
    assert r.returncode == 0, r.stderr
    # a reader that leaves early (| head): no traceback
    cmd = [sys.executable, "sample.py", f"--out_dir={tmp_path}", "--num_samples=200", "--max_new_tokens=50", "--device=cpu"]
    p = subprocess.run(shlex.join(cmd) + " | head -c 1", shell=True, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.stderr == "" and len(p.stdout) == 1, p.stderr


def test_checkpoints_of_other_programs_get_one_line(tmp_path):
    train.train(train.parse_args(TINY + [f"--out_dir={tmp_path}", "--max_iters=1"]))
    good = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    nanogpt_args = {k: v for k, v in good["model_args"].items() if k != "attn"}  # nanoGPT's have no pattern
    extra_key = {**good["model_args"], "flash": True}
    prefixed = {"_orig_mod." + k: v for k, v in good["model"].items()}  # a compiled model's state_dict
    for change, msg in ((dict(model_args=nanogpt_args), "not a checkpoint of this project"),
                        (dict(model_args=extra_key), "does not fit this project's GPT (GPTConfig"),
                        (dict(model=prefixed), "does not fit this project's GPT (Error(s) in loading")):
        torch.save({**good, **change}, tmp_path / "ckpt.pt")
        for script, cli in (("sample.py", [f"--out_dir={tmp_path}", "--device=cpu"]),
                            ("train.py", TINY + [f"--out_dir={tmp_path}", "--init_from=resume"])):
            r = run_cli(cli, script=script)
            assert r.returncode == 1 and msg in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


def test_sample_shows_only_the_end_of_a_prompt_file(tmp_path):
    # a whole book as the prompt: a note and its last 200 characters, then the sample; not 40,000 lines
    train.train(train.parse_args(TINY + [f"--out_dir={tmp_path}", "--max_iters=1"]))
    book = os.path.join(ROOT, "data", "shakespeare_char", "input.txt")
    r = run_cli([f"--out_dir={tmp_path}", f"--start=FILE:{book}", "--num_samples=1", "--max_new_tokens=20",
                 "--device=cpu"], script="sample.py")
    text = open(book).read()
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"[prompt: {len(text):,} characters from {book}, showing the last 200]\n")
    assert r.stdout.split("\n", 1)[1].startswith(text[-200:])
    lines = r.stdout.splitlines()
    assert lines[-1] == "---------------" and len(lines) < 20 < text.count("\n")


@pytest.mark.parametrize("dataset", ["shakespeare", "pystdlib"])
def test_train_and_sample_on_offline_bpe_data(tmp_path, dataset):
    # the token-level corpora prepare themselves offline, train, and sample.py decodes GPT-2 BPE
    args = [a for a in TINY if not a.startswith("--dataset")]
    r = run_cli(args + [f"--dataset={dataset}", f"--out_dir={tmp_path}", "--max_iters=2", "--eval_interval=2"])
    assert r.returncode == 0, r.stderr
    assert "step 2:" in r.stdout
    assert torch.load(tmp_path / "ckpt.pt", weights_only=False)["model_args"]["vocab_size"] == 50304
    r = run_cli([f"--out_dir={tmp_path}", "--start=def main(", "--num_samples=1", "--max_new_tokens=8",
                 "--device=cpu"], script="sample.py")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("def main(") and len(r.stdout) > len("def main(\n---------------\n")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_requested_without_cuda(tmp_path):
    r = run_cli(TINY + [f"--out_dir={tmp_path}", "--device=cuda"])
    assert r.returncode == 1 and "has no CUDA GPU" in r.stderr and len(r.stderr.splitlines()) == 1
