"""The local pipeline (`make demo`): the whole chain offline, AWS emulated with moto.

Grows with the trigger, trainer and Terraform; see ../shared/ARCHITECTURE.md.
"""

import sys


def main() -> int:
    print("pushtrain local pipeline: the trainer, trigger and Terraform are being built; nothing to run yet.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
