"""Article 1, serially: one `requests.get` after another."""

import requests

from common import Timer, auth, describe, parse_args, report_items


def get_item(url, item_id):
    response = requests.get(f"{url}/api/items/{item_id}", headers=auth())
    response.raise_for_status()
    return response.json()


if __name__ == "__main__":
    args = parse_args(__doc__)
    results, error = None, None
    with Timer() as timer:
        try:
            results = [get_item(args.url, i) for i in range(1, args.jobs + 1)]
        except Exception as e:  # the harness reports it; the article would have crashed
            error = describe(e)
    report_items("serial", args, timer, results, error)
