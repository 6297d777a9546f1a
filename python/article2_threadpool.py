"""Article 2, the ticket migration: `Pool(20)` over the queue's tickets and, in each ticket's
job, a nested `Pool(20)` over its attachments. With `multiprocessing.Pool` it fails: a pool's
workers are daemonic, and "daemonic processes are not allowed to have children".
article2_threadpool.py is this file with its first import swapped for the article's one-line
fix, `from multiprocessing.pool import ThreadPool as Pool`; nothing else differs."""

from multiprocessing.pool import ThreadPool as Pool

import requests

from common import Timer, auth, describe, parse_args, report_migration


def get(url):
    response = requests.get(url, headers=auth())
    response.raise_for_status()
    return response


def post(url, headers, **body):
    response = requests.post(url, headers={**auth(), **headers}, **body)
    response.raise_for_status()
    return response


def migrate_attachment(args):
    url, new_id, attachment = args
    data = get(f"{url}/old/attachments/{attachment['id']}").content
    post(f"{url}/new/tickets/{new_id}/attachments", {"X-Attachment-Name": attachment["name"]},
         data=data)
    return attachment["name"], data


def migrate_ticket(args):
    url, ticket_id, inner_workers = args
    ticket = get(f"{url}/old/tickets/{ticket_id}").json()
    new_id = post(f"{url}/new/tickets", {"Idempotency-Key": str(ticket_id)}, json=ticket).json()["id"]
    attachments = get(f"{url}/old/tickets/{ticket_id}/attachments").json()
    with Pool(inner_workers) as pool:
        files = pool.map(migrate_attachment, [(url, new_id, a) for a in attachments])
    return ticket, files


if __name__ == "__main__":
    args = parse_args(__doc__, workers=20, migration=True)
    listed, migrated, error = 0, [], None
    with Timer() as timer:
        try:
            tickets = get(f"{args.url}/old/queues/{args.queue}/tickets").json()[: args.jobs]
            listed = len(tickets)
            with Pool(args.workers) as pool:
                migrated = pool.map(migrate_ticket,
                                    [(args.url, t["id"], args.inner_workers) for t in tickets])
        except Exception as e:  # the daemonic error: reported, as the article shows it
            error = describe(e)
    summary = get(f"{args.url}/new/tickets/summary").json()
    approach = f"{Pool.__name__}({args.workers}), nested {Pool.__name__}({args.inner_workers})"
    report_migration(approach, args, timer, listed, migrated, summary, error)
