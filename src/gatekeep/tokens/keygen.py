"""Print a new admission-token key file: `python -m gatekeep.tokens.keygen {HS256,EdDSA}`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gatekeep.tokens.keyring import generate_key_file
from gatekeep.verify import ALLOWED_ALGORITHMS, KeyConfigError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gatekeep.tokens.keygen", description=__doc__)
    parser.add_argument("alg", choices=ALLOWED_ALGORITHMS, help="signing algorithm of the new key")
    parser.add_argument("--kid", help="key id (default: algorithm, UTC date and a random part)")
    args = parser.parse_args(argv)

    try:
        sys.stdout.write(generate_key_file(args.alg, kid=args.kid))
    except KeyConfigError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
