"""Article 1 with `multiprocessing.pool.ThreadPool(32)`: the same `map` over tuples, on threads
(the calls wait on the network, so the GIL is released while they wait)."""

from multiprocessing.pool import ThreadPool

from article1_pool import get_item_star
from common import Timer, describe, parse_args, report_items

if __name__ == "__main__":
    args = parse_args(__doc__, workers=32)
    results, error = None, None
    with Timer() as timer:
        try:
            with ThreadPool(args.workers) as pool:
                results = pool.map(get_item_star, [(args.url, i) for i in range(1, args.jobs + 1)])
        except Exception as e:
            error = describe(e)
    report_items(f"ThreadPool({args.workers})", args, timer, results, error)
