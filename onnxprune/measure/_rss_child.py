"""Child process of `onnxprune.memory`: load one model in ONNX Runtime, run it, print peak RSS as JSON.

Run as a script (`python -c "import runpy; runpy.run_path(...)"`), not imported: it imports only the
standard library, numpy and onnxruntime, so the baseline it reports is an ONNX Runtime deployment's,
not onnxprune's.
"""

import json
import resource
import sys


def _max_rss_bytes() -> int:
    # Linux keeps ru_maxrss across fork + exec, so a child's starts at its parent's RSS; VmHWM is
    # the high-water mark of this process's own address space only.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kibibytes, macOS bytes.
    return int(value) if sys.platform == "darwin" else int(value) * 1024


def main(argv: list[str]) -> None:
    request = json.loads(argv[1])
    import numpy as np
    import onnxruntime as ort

    baseline = _max_rss_bytes()
    with np.load(request["feed"]) as data:
        feed = {name: data[name] for name in data.files}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if request.get("threads"):
        options.intra_op_num_threads = int(request["threads"])
        options.inter_op_num_threads = 1
    providers = [entry if isinstance(entry, str) else (entry[0], entry[1]) for entry in request["providers"]]
    session = ort.InferenceSession(request["model"], sess_options=options, providers=providers)
    after_load = _max_rss_bytes()
    for _ in range(int(request.get("runs", 2))):
        session.run(None, feed)
    print(json.dumps({
        "baseline_rss_bytes": baseline,
        "after_load_rss_bytes": after_load,
        "peak_rss_bytes": _max_rss_bytes(),
        "providers_used": session.get_providers(),
    }))


if __name__ == "__main__":
    main(sys.argv)
