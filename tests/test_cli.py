"""The `vmshm` command as a user runs it: a real process, a real object, a C peer."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

import pytest

from vmshm.host_model import ShmRegion

C_SOURCE = Path(__file__).resolve().parent / "c" / "shm_writer.c"


def vmshm(*args, check_rc=None):
    r = subprocess.run([sys.executable, "-m", "vmshm.cli", *args], capture_output=True,
                       text=True, timeout=300)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    if check_rc is not None:
        assert r.returncode == check_rc, f"rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture
def shm_name():
    name = f"/vmshm-cli-{os.getpid()}-{uuid4().hex[:8]}"
    yield name
    # Only the test made this object, so only the test removes it.
    try:
        os.unlink(f"/dev/shm{name}")
    except FileNotFoundError:
        pass


@pytest.fixture(scope="module")
def shm_writer(tmp_path_factory):
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler 'cc' on PATH to build tests/c/shm_writer.c")
    exe = tmp_path_factory.mktemp("c") / "shm_writer"
    subprocess.run([cc, "-o", str(exe), str(C_SOURCE), "-lrt"], check=True)
    return exe


def test_demo_against_an_object_a_c_program_made(shm_name, shm_writer):
    subprocess.run([shm_writer, "write", shm_name, str(1 << 20), "hello from a C program"],
                   check=True)
    r = vmshm("demo", "--shm", shm_name, check_rc=0)
    assert "guest read at offset 0:  'hello from a C program'" in r.stdout
    pid = re.search(r"I was here: (\d+)", r.stdout).group(1)
    seen = subprocess.run([shm_writer, "read", shm_name], check=True, capture_output=True,
                          text=True).stdout
    assert seen.strip() == f"I was here: {pid}"
    # The object outlives the simulation, its size untouched.
    assert os.stat(f"/dev/shm{shm_name}").st_size == 1 << 20


def test_demo_prints_a_cycle_table_that_grows_with_host_latency(shm_name):
    fast = vmshm("demo", "--shm", shm_name, "--create", "64K", check_rc=0).stdout
    slow = vmshm("demo", "--shm", shm_name, "--host-latency", "100", check_rc=0).stdout

    def cycles(text, step):
        return int(re.search(rf"{re.escape(step)}\s*│\s*(\d+)", text).group(1))

    for step in ("ioctl(name)", "close"):
        assert cycles(slow, step) == cycles(fast, step) + 100, step
    assert cycles(slow, "read offset 0") == cycles(fast, "read offset 0")


def test_demo_maps_a_short_object_whole(shm_name):
    r = vmshm("demo", "--shm", shm_name, "--create", "4096", check_rc=0)
    assert "created" in r.stdout and "guest mapped 4096 bytes" in r.stdout


def test_create_never_resizes_an_existing_object(shm_name):
    region = ShmRegion.create(shm_name, 8192)
    region.close()
    r = vmshm("demo", "--shm", shm_name, "--create", "1M", check_rc=0)
    assert "not resized" in r.stdout
    assert os.stat(f"/dev/shm{shm_name}").st_size == 8192


@pytest.mark.parametrize("name, code", [
    ("missing", "ENOENT"), ("no-slash", "EINVAL"), ("/a/b", "EINVAL"), ("/" + "x" * 256,
                                                                          "ENAMETOOLONG"),
])
def test_demo_errors_are_one_line_with_the_errno_name(shm_name, name, code):
    target = shm_name if name == "missing" else name
    r = vmshm("demo", "--shm", target, check_rc=1)
    assert r.stderr.startswith(f"vmshm: {code}: "), r.stderr
    assert not os.path.exists(f"/dev/shm{shm_name}"), "a failed demo must not create objects"


def test_bad_parameters_exit_2_without_traceback(shm_name):
    r = vmshm("demo", "--shm", shm_name, "--create", "1M", "--window-size", "1000", check_rc=2)
    assert "window_size must be a power of two" in r.stderr
    vmshm("demo", "--shm", shm_name, "--create", "lots", check_rc=2)


def test_demo_writes_a_vcd(shm_name, tmp_path):
    vcd = tmp_path / "demo.vcd"
    vmshm("demo", "--shm", shm_name, "--create", "4K", "--vcd", str(vcd), check_rc=0)
    text = vcd.read_text()
    assert "$enddefinitions" in text and "ctl_req__valid" in text


def test_generate_writes_verilog(tmp_path):
    out = tmp_path / "core.v"
    vmshm("generate", "-o", str(out), "--data-width", "64", "--window-size", "64K", check_rc=0)
    assert "module vmshm_core(" in out.read_text()


def test_regs_prints_the_register_map():
    r = vmshm("regs", check_rc=0)
    assert "| 0x00 | OPEN | RT |" in r.stdout and "| 0x20 | CLOSE | RT |" in r.stdout


def test_version_is_the_installed_package_s():
    from importlib.metadata import version
    r = vmshm("--version", check_rc=0)
    assert r.stdout.strip() == f"vmshm {version('vmshm')}"


def test_the_console_never_writes_a_control_character_of_the_text():
    """The net under every print: text holding ESC, BEL, CSI (C1) or a right-to-left override
    is written escaped; the console's own styles still reach a terminal as codes."""
    import io

    from vmshm.console import make_console

    out = io.StringIO()
    console = make_console(file=out, force_terminal=True, color_system="standard", width=80)
    console.print("name /x\x1b[2J\x9b2J\u202e end\nnext line", style="red")
    text = out.getvalue()
    assert "/x\\x1b[2J\\x9b2J\\u202e end" in text
    assert "\nnext line" in text.replace("\x1b[31m", "")    # line breaks are kept
    # The red style's start and reset on each line, no more.
    assert text.count("\x1b") == 4, repr(text)


def _options():
    """Yield ``(command, option, action)`` for every option and argument of every command."""
    import argparse

    from vmshm.cli import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, subparser in sub.choices.items():
        for action in subparser._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                yield command, "/".join(action.option_strings) or action.dest, action


def test_every_option_of_every_command_has_help():
    missing = [f"vmshm {command} {option}" for command, option, action in _options()
               if not action.help]
    assert not missing, f"options without help: {missing}"


#: The one metavar style: capitalised words, joined by `=`, `:` or `,` (``N``, ``FILE``,
#: ``PARAM=START:STOP:STEP``, ``W,W``).
METAVAR = re.compile(r"[A-Z][A-Z0-9]*(?:[=:,][A-Z][A-Z0-9]*)*")
#: Metavars that name one kind of value: a place in the file system.
PATHS = {"FILE": "PATH", "DIR": "PATH"}


def test_one_metavar_style():
    """Every option that takes a value names it with choices or a metavar in the one style,
    and an option of one name calls its value the same in every command."""
    bad, seen = [], {}
    for command, option, action in _options():
        if action.nargs == 0 or (action.choices is not None and action.metavar is None):
            continue
        metavar = action.metavar
        if metavar is None or not METAVAR.fullmatch(metavar):
            bad.append(f"vmshm {command} {option} {metavar or '(none: ' + action.dest + ')'}")
            continue
        # A file, a folder and either are different values: -o is a file or a folder.
        word = metavar.split(",")[0]
        seen.setdefault(option, {}).setdefault(PATHS.get(word, word), []).append(command)
    assert not bad, f"metavars not in the one style (WORD, WORD,WORD, A=B:C): {bad}"
    differ = {option: names for option, names in seen.items() if len(names) > 1}
    assert not differ, f"one option, several names for its value: {differ}"


def test_behaviours_help_marks_the_ones_off_by_default_and_why():
    from vmshm.fuzz.host import BEHAVIOURS

    text = next(a.help for c, o, a in _options() if c == "fuzz" and o == "--behaviours")
    on, off = text.split("Off by default, with why:")
    for b in BEHAVIOURS:
        assert b.name in (on if b.enabled else off), b.name
        if not b.enabled:
            assert b.needs in off, b.needs


def test_channel_without_bench_shows_its_help():
    r = vmshm("channel", check_rc=2)
    assert "--bench" in r.stdout and "--rtl-count" in r.stdout, r.stdout
    assert "say --bench" in r.stderr


def test_sigterm_removes_the_runs_scratch_objects():
    # `timeout vmshm fuzz ...` sends SIGTERM: the run unwinds as Ctrl-C does and its objects go.
    import signal
    import time
    proc = subprocess.Popen([sys.executable, "-m", "vmshm.cli", "fuzz", "--transactions",
                             "1000000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    prefix = f"fz{proc.pid % 1000:03d}"
    try:
        deadline = time.monotonic() + 60
        made = set()
        while not made and time.monotonic() < deadline:
            time.sleep(0.2)
            made = {n for n in os.listdir("/dev/shm") if n.startswith(prefix)}
        assert made, "the fuzz run made no objects"
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
        left = made & set(os.listdir("/dev/shm"))
        for name in left:       # a failing run's leftovers are this test's to remove
            os.unlink(f"/dev/shm/{name}")
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "vmshm: terminated" in err and "Traceback" not in err
    assert not left, f"left in /dev/shm after SIGTERM: {sorted(left)}"
