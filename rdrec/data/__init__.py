"""Data: sources → canonical dataset → split and candidates → batches."""

import datasets

# Our Arrow tables are small metadata saves; per-save progress bars would bury the training output.
datasets.disable_progress_bars()
