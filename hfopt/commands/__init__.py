"""What the `hfopt` console script runs: argument parsing and printing only; the work is in the feature modules.

| command | module |
|---|---|
| `hfopt env` | versions of hfopt and its libraries, the CPU |
| `hfopt check-config FILE` | `check_config` |
| `hfopt launch ...` | `launch` |
| `hfopt compress MODEL_DIR ...` | `compress` |
| `hfopt compare STUDY.yaml` | `compare` |
"""
