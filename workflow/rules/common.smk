# Shared by every rule file: validated config, paths and small input helpers.

from irm_bench.config import validate_config

# Validate before any rule is built: a typo stops here with the offending key named.
config.update(validate_config(config, base_dir=workflow.basedir))

RESULTS = config["results_dir"]
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
# Scheduler resource for training rules: one GPU each when the config asks for it.
TRAIN_GPUS = 1 if config["gpu_jobs"] else 0
