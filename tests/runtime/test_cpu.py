"""Reading the CPU: processors, physical cores among the allowed CPUs, the base clock and where it came from."""

from docscore.runtime.cpu import base_clock, parse_cpuinfo, physical_cores
from docscore.bench.machine import cpu_facts, peak_for


def _cpuinfo(cores: int, threads_per_core: int, model="AMD EPYC 9654 96-Core Processor", flags="fma avx avx2",
             ids=True) -> str:
    blocks = []
    for n in range(cores * threads_per_core):
        lines = [f"processor\t: {n}", "vendor_id\t: AuthenticAMD", "cpu family\t: 25", f"model name\t: {model}",
                 "cpu MHz\t\t: 3700.000", f"flags\t\t: {flags}"]
        if ids:
            lines += ["physical id\t: 0", f"core id\t\t: {n % cores}"]  # Linux numbers hyperthreads after cores
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def test_hyperthreads_do_not_add_cores():
    procs = parse_cpuinfo(_cpuinfo(cores=4, threads_per_core=2))
    assert len(procs) == 8
    assert physical_cores(procs, set(range(8)))[0] == 4
    assert physical_cores(procs, {0, 4})[0] == 1  # two siblings of one core
    assert physical_cores(procs, {0, 1})[0] == 2


def test_cores_without_core_ids_are_logical_cpus_and_say_so():
    procs = parse_cpuinfo(_cpuinfo(cores=2, threads_per_core=1, ids=False))
    n, source = physical_cores(procs, {0, 1})
    assert n == 2 and "logical" in source


def test_base_clock_from_sysfs_first(tmp_path):
    (tmp_path / "base_frequency").write_text("2400000\n")
    (tmp_path / "cpuinfo_max_freq").write_text("3700000\n")
    assert base_clock("Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz", 3900.0, tmp_path) == (
        2.4, "sysfs base_frequency (base clock)")


def test_base_clock_amd_nominal(tmp_path):
    (tmp_path / "amd_pstate_nominal_freq").write_text("2400000\n")
    assert base_clock("AMD EPYC 9654", 3700.0, tmp_path)[0] == 2.4


def test_base_clock_from_model_name(tmp_path):
    ghz, source = base_clock("Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz", 3900.0, tmp_path)
    assert ghz == 2.1 and "model name" in source


def test_base_clock_falls_back_to_current_mhz_and_says_so(tmp_path):
    ghz, source = base_clock("AMD EPYC", 2445.4, tmp_path)
    assert abs(ghz - 2.4454) < 1e-9 and "current cpu MHz" in source and "no base clock" in source
    assert base_clock("AMD EPYC", None, tmp_path) == (None, "unknown")


def test_cpu_facts_peaks_on_physical_cores(tmp_path):
    procs = parse_cpuinfo(_cpuinfo(cores=2, threads_per_core=2, model="CPU @ 2.00GHz",
                                   flags="fma avx avx2 avx512f avx512_vnni avx512_bf16"))
    facts = cpu_facts(procs, {0, 1, 2, 3}, cpufreq_dir=tmp_path)
    assert facts["logical_cpus"] == 4 and facts["cores"] == 2 and facts["ghz"] == 2.0
    assert facts["peak_gflops"] == {"fp32": 128.0, "bf16": 256.0, "int8": 512.0}  # Zen 4: 32/64/128 per cycle
    assert peak_for(facts, "int8", threads=1) == 256.0
    assert peak_for(facts, "int8", threads=8) == 512.0  # more threads than cores add no FMA units
    assert peak_for(facts, "bf16", None) == 256.0 and peak_for(facts, "fp16", None) is None
