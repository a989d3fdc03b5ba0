# Shared by every rule file: validated config, paths and small input helpers.

import sys

from irm_bench.config import ConfigError, validate_config

# Validate before any rule is built: a typo stops here with the offending key named.
# --config strings are read as YAML values first, so overrides are checked like the file.
# sys.exit prints the message alone (a raised error would add a traceback fragment).
try:
    config.update(
        validate_config(
            config,
            base_dir=workflow.basedir,
            cli_overrides=workflow.config_settings.config,
        )
    )
except ConfigError as err:
    sys.exit(str(err))

RESULTS = config["results_dir"]
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
# Scheduler resource for training rules: one GPU each when the config asks for it.
TRAIN_GPUS = 1 if config["gpu_jobs"] else 0
