"""Article 1 with `multiprocessing.Pool(32).map`: Python 2's Pool had no `starmap`, so the
article maps a helper that unpacks each tuple of arguments."""

from multiprocessing import Pool

from article1_serial import get_item
from common import Timer, describe, parse_args, report_items


def get_item_star(args):
    """The article's workaround for the missing `starmap`."""
    return get_item(*args)


if __name__ == "__main__":
    args = parse_args(__doc__, workers=32)
    results, error = None, None
    with Timer() as timer:
        try:
            with Pool(args.workers) as pool:
                results = pool.map(get_item_star, [(args.url, i) for i in range(1, args.jobs + 1)])
        except Exception as e:
            error = describe(e)
    report_items(f"Pool({args.workers})", args, timer, results, error)
