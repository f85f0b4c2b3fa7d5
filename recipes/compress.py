"""Compress a fine-tuned classifier and report what it costs: the same as the `hfopt compress` command.

    python recipes/compress.py outputs/finetune_bert --eval_file recipes/data/sentiment/validation.csv \
        --prune_magnitude 0.5 --quantize dynamic_int8 --quantize_embeddings --output_dir outputs/compressed

Chain order: --prune_heads → --prune_ffn → --prune_magnitude → --quantize. Writes OUT/model (load it with
hfopt.compression.load_compressed), OUT/compression_report.json and OUT/compression_report.md.
"""

import sys

from hfopt.commands.compress import main

if __name__ == "__main__":
    sys.exit(main())
