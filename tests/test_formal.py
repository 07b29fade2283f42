"""`vmshm formal` proves or bounds every property of formal/props.py, at the CI depth.

Each property is one SymbiYosys run (YoWASP's tools and Yices from PyPI). The CI depths are the
shortest that still reach past the longest bound they check (see formal/run.py); ``vmshm formal
--full`` goes deeper. A deliberately broken core must give a counterexample.
"""

import os

import pytest

from vmshm.abi.bounds import core_bound
from vmshm.formal import components as C
from vmshm.formal import run as F


def require_formal():
    reason = F.missing_tools()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the formal tools must run under CI: {reason}")
        pytest.skip(reason)


def _task(name, top, prop):
    # A check that shows a known bug of main fails until its fix merges (issue 22's branches):
    # strict, so the fix's merge turns it into an XPASS failure and the mark must go.
    reason = F.EXPECTED_TO_FAIL.get(name)
    marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
    return pytest.param(name, top, prop, id=name, marks=marks)


@pytest.mark.parametrize("name,top,prop", [_task(*t) for t in F.TASKS])
def test_property_holds(tmp_path, name, top, prop):
    require_formal()
    outcome = F.check(name, top, prop, depth=F.ci_depth(name), out=tmp_path)
    # A component's safety group must close under k-induction (unbounded), its covers must all
    # be reached; the rest are bounded checks.
    want = {"prove": "proved", "cover": "covered"}.get(F.mode(name), "bounded")
    assert outcome.status == want, outcome.line()


def test_liveness_depths_come_from_the_documented_bounds():
    # The depth of each liveness check is the bound abi.bounds states for the longest wait at
    # the harness's parameters, plus the cycles to start one: computed, never typed.
    p = C.PARAMS
    t = p["host_timeout"]
    assert F.ci_depth("window.live") > core_bound("write", t, beats=p["max_beats"])
    # A write passing a read starts at the earliest 3 cycles in (the read's request beat taken).
    assert F.ci_depth("window.live") > core_bound("pass", t, beats=p["max_beats"]) + 3
    from vmshm.formal.props import CORE_PARAMS
    assert F.ci_depth("core.cpl_time") > core_bound("open", CORE_PARAMS["host_timeout"],
                                                    name_bytes=CORE_PARAMS["name_size"])
    from vmshm.abi.bounds import request_bound
    from vmshm.formal.props import PCI_PARAMS
    assert F.ci_depth("pci.cpl_time") > request_bound("open", PCI_PARAMS["host_timeout"],
                                                      name_bytes=PCI_PARAMS["name_size"])
    assert F.ci_depth("control.live") > (core_bound("open", t, name_bytes=p["name_size"]) +
                                          core_bound("close", t))
    from vmshm.formal.usp import USP_COMPONENTS
    assert [n for n, _, _ in F.TASKS if F.mode(n) == "cover"] == [
        f"{c}.cover" for c in C.COMPONENTS + USP_COMPONENTS]


#: Deliberate breaks, each a single expression of the RTL, and the check that must catch it:
#: the four held-out escapes of issue 27 first.
BREAKS = [
    ("window", "with m.Elif(self.wr.valid):\n                    # Only",
     "with m.Else():\n                    # Only", "window.live"),
    ("control", "b.owe(m, CtlOp.CLOSE, 0, 1)\n                    give_up()",
     "b.owe(m, CtlOp.CLOSE, 0, 1)\n                    finish(C(Status.ETIMEDOUT, 8))",
     "control.safety"),
    ("registers", "self.data.eq(self.data & ~self.clear | self.set)",
     "self.data.eq((self.data | self.set) & ~self.clear)", "registers.safety"),
    ("doorbell", "m.If(self.ring.valid & (self.ring.payload.vector < VECTORS))",
     "m.If(self.ring.valid)", "doorbell.safety"),
    ("window", "dma_req.payload.tag.eq(owed_tag)", "dma_req.payload.tag.eq(tag)",
     "window.safety"),
    ("control", "with m.If(self.last):\n                    m.d.sync += self.owed.eq(0)",
     "with m.If(1):\n                    m.d.sync += self.owed.eq(0)", "control.safety"),
    ("doorbell", "m.d.sync += before.eq(kept & self.mask)",
     "m.d.sync += before.eq(self.status & self.mask)", "doorbell.safety"),
    # A window write passing a waiting read (PASS; issue 22, finding 2): the catalogue's two
    # PASS mutants (the timer running while the guest is slow; a beat counted taken while none
    # was offered), then what each of window.safety's PASS properties is there for.
    ("window", "with m.Elif(self.wr.valid):\n                    m.d.comb += post_timer.run",
     "with m.Elif(1):\n                    m.d.comb += post_timer.run", "window.live"),
    ("window", "with m.If(self.wr.valid & self.free & dma_req.ready):\n"
     "                    m.d.comb += post_timer.restart",
     "with m.If(self.wr.valid & self.free | dma_req.ready):\n"
     "                    m.d.comb += post_timer.restart", "window.safety"),
    ("window", "dma_req.payload.addr.eq(post.addr)", "dma_req.payload.addr.eq(cmd.addr)",
     "window.safety"),
    ("window", "dma_req.payload.tag.eq(post_tag)", "dma_req.payload.tag.eq(tag)",
     "window.safety"),
    ("window", "m.d.comb += post.ready.eq(self.free)", "m.d.comb += post.ready.eq(1)",
     "window.safety"),
    ("window", "post.done.eq(1),\n                                     post.failed.eq(1)]",
     "cmd.done.eq(1),\n                                     cmd.failed.eq(1)]", "window.safety"),
    ("window", "dma_rsp.ready.eq(~match),\n                    timer.run",
     "dma_rsp.ready.eq(1),\n                    timer.run", "window.safety"),
    ("window", "self.reject.eq(dma_rsp.payload.err), cmd.done.eq(1)]",
     "self.reject.eq(dma_rsp.payload.err), cmd.done.eq(1),\n"
     "                                 cmd.failed.eq(dma_rsp.payload.err)]", "window.safety"),
    ("window", "with m.If(post_timer.expired):", "with m.If(0):", "window.live"),
    # The core's decode and the control channel, under the core-level core.dma_safe (proved).
    ("core", " & (hdr_end <= ctl.map_limit)", "", "core.dma_safe"),
    ("control", "m.If((pending_op == CtlOp.OPEN) & (rsp.status == Status.OK))",
     "m.If(pending_op == CtlOp.OPEN)", "core.dma_safe"),
    ("control", '"owed": Out(1, init=1)', '"owed": Out(1, init=0)', "core.reset"),
    ("control", "self.op = Signal(2, init=CtlOp.RESET)", "self.op = Signal(2, init=CtlOp.CLOSE)",
     "core.reset"),
    ("window", "dma_req.payload.tag.eq(owed_tag)", "dma_req.payload.tag.eq(tag)",
     "core.streams"),
    ("control", "with m.If(b.stale | b.owed):", "with m.If(b.stale):", "core.streams"),
    # A window read's beats counted down while none moves: `last` on the wrong beat.
    ("core", "with m.If(self.cpl.valid & self.cpl.ready):", "with m.If(self.cpl.ready):",
     "core.one_completion"),
    # A DOORBELL write waits for ever while the host keeps the last doorbell.
    ("core", "db_wait.eq(db_held & ~db_timer.expired)", "db_wait.eq(db_held)", "core.cpl_time"),
    # The register decode: a trigger without the byte enables, OPEN's read starting a CLOSE.
    ("registers", "taken = bus.r_stb & hit & bus.r_be.word_select(lane, 4).any()",
     "taken = bus.r_stb & hit", "core.open_close_once"),
    ("core", "ctl_cmd.op.eq(Mux(trigger_open, CtlOp.OPEN, CtlOp.CLOSE))",
     "ctl_cmd.op.eq(Mux(trigger_close, CtlOp.OPEN, CtlOp.CLOSE))", "core.open_close_once"),
    # The same through the soft front end (pci.*), and the front end's own.
    ("core", "db_wait.eq(db_held & ~db_timer.expired)", "db_wait.eq(db_held)", "pci.cpl_time"),
    ("pci", "self.cpl.payload.last.eq(remaining == 0)", "self.cpl.payload.last.eq(1)",
     "pci.one_completion"),
    ("control", "with m.If(b.stale | b.owed):", "with m.If(b.stale):", "pci.streams"),
    ("pci", "with m.If(core.irq_msg & ~msi_pending):", "with m.If(core.irq_msg):",
     "pci.streams"),
    # An FLR: the soft function keeps no beat on offer through it, or lets a kept one go untaken.
    ("pci", "m.d.comb += hold.flr.eq(flr)", "m.d.comb += hold.flr.eq(0)", "pci.streams"),
    ("flr_hold", "with m.If(o.ready):\n                m.d.sync += self.busy.eq(0)",
     "with m.If(1):\n                m.d.sync += self.busy.eq(0)", "pci.streams"),
    # An FLR that leaves configuration space alone: Bus Master Enable still set after it.
    ("pci", "m.d.comb += [regs.flr.eq(flr), core.flr_start.eq(flr)]",
     "m.d.comb += [regs.flr.eq(0), core.flr_start.eq(flr)]", "pci.flr_quiet"),
    # The UltraScale+ shim's pieces (formal/usp.py).
    ("usp.streams", "main.eq(skid)", "main.eq(i.payload)", "usp_skid.safety"),
    ("usp.streams", "self.r.valid.eq(cp != rp)", "self.r.valid.eq(wp != rp)", "usp_fifo.safety"),
    ("usp.completer", "drop = cut | i.user[CQ_DISCONTINUE]", "drop = i.user[CQ_DISCONTINUE]",
     "usp_cq.safety"),
    ("usp.streams", "fifo.w.payload.last.eq(dw.payload.last)", "fifo.w.payload.last.eq(1)",
     "usp_tx.safety"),
    ("usp.streams", "keep.bit_select(idx, 1).eq(1), idx.eq(idx + 1)",
     "keep.bit_select(idx, 1).eq(0), idx.eq(idx + 1)", "usp_tx.safety"),
    ("usp.streams", "Mux(sop, Mux(idx == 0, dw.payload.user, user), 0)",
     "Mux(1, Mux(idx == 0, dw.payload.user, user), 0)", "usp_tx.safety"),
    ("usp.irq", "fire.eq((owed | add) & msi_on & ~busy & ~masked)",
     "fire.eq((owed | add) & msi_on & ~masked)", "usp_irq.safety"),
    ("usp.irq", "fire.eq((owed | add) & msi_on & ~busy & ~masked)",
     "fire.eq((owed | add) & msi_on & ~busy)", "usp_irq.safety"),
    ("usp.irq", "with m.If(waited == MSI_ORPHAN_WAIT - 1):", "with m.If(waited == 2):",
     "usp_irq.safety"),
    ("usp.irq", "level.eq(self.irq & ~msi_enable & ~self.intx_disable)",
     "level.eq(self.irq & ~msi_enable)", "usp_irq.safety"),
    ("usp.completer", "want = (np_granted == 0) & (self.count == 0) & ~np_pulse",
     "want = (self.count == 0) & ~np_pulse", "usp_credits.safety"),
    ("usp.completer", "m.d.comb += spent.eq(self.used + self.dropped)",
     "m.d.comb += spent.eq(self.used)", "usp_credits.safety"),
    # The RC receiver's place in RC outside the FLR's reset (an FLR cut a completion: its data
    # read as a descriptor freed a tag still owed completions).
    ("usp.completions", "in_data = Signal(reset_less=True)", "in_data = Signal()",
     "usp_rq.safety"),
    ("usp.requester", "m.d.comb += odd.eq(~be.matches(0b1000, 0b1100, 0b1110, 0b1111))",
     "m.d.comb += odd.eq(0)", "usp_rq.safety"),
]


@pytest.mark.parametrize("module,old,new,name", BREAKS, ids=[b[3] + "-" + str(i)
                                                             for i, b in enumerate(BREAKS)])
def test_a_deliberate_break_fails_its_check(tmp_path, module, old, new, name):
    require_formal()
    from vmshm.formal.mutants import patched
    with patched(module, old, new):
        _, top, prop = next(t for t in F.TASKS if t[0] == name)
        outcome = F.check(name, top, prop, depth=F.ci_depth(name), out=tmp_path, cache=False)
    assert outcome.status == "failed", outcome.line()


def test_cli_prints_one_line_per_property(tmp_path, capsys):
    require_formal()
    from vmshm.cli import main
    assert main(["formal", "pci.msi_edge", "core.reset", "--depth", "6",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    # In the order of F.TASKS: one proved by k-induction, then a bounded check.
    assert out == ["core.reset: proved (k-induction, depth 6)",
                   "pci.msi_edge: bounded to 6 cycles"]


def test_cli_refuses_unknown_properties(capsys):
    from vmshm.cli import main
    assert main(["formal", "no.such"]) == 2
    assert "no property named 'no.such'" in capsys.readouterr().err


def test_the_docs_show_what_the_runner_prints():
    # docs/formal.md's sample: each line as the runner prints it for that check at CI depth.
    from pathlib import Path
    doc = (Path(__file__).parent.parent / "docs" / "formal.md").read_text()
    block = doc.split("```\n$ vmshm formal ", 1)[1].split("```", 1)[0].splitlines()
    names = block[0].split()
    assert [line.split(":")[0] for line in block[1:]] == names
    for line in block[1:]:
        name = line.split(":")[0]
        if name in F.EXPECTED_TO_FAIL:
            assert line.startswith(f"{name}: FAILED, counterexample: ")
            assert line.endswith(f"(expected until fixed: {F.EXPECTED_TO_FAIL[name]})")
        else:
            status = {"prove": "proved", "cover": "covered"}.get(F.mode(name), "bounded")
            assert line == F.Outcome(name, status, F.ci_depth(name)).line()
    for name, _, _ in F.TASKS:
        assert f"`{name.removesuffix('_wide')}" in doc, f"{name} is not in docs/formal.md"
