"""The in-memory hand-over from ComfyUI's worker thread to the waiting request."""
import asyncio
import threading

from face_migration.selfhost.mailbox import Mailbox


def test_an_image_delivered_from_another_thread_wakes_the_request():
    mailbox = Mailbox()

    async def wait():
        future = mailbox.open("r1")
        worker = threading.Thread(target=lambda: mailbox.deliver("r1", [b"png"]))
        worker.start()
        result = await asyncio.wait_for(future, 5)
        worker.join()
        mailbox.close("r1")
        return result

    assert asyncio.run(wait()) == [b"png"]
    assert mailbox.deliver("r1", [b"late"]) is False  # closed: nobody waits any more


def test_a_second_delivery_or_an_unknown_id_changes_nothing():
    mailbox = Mailbox()

    async def twice():
        future = mailbox.open("r2")
        assert mailbox.deliver("r2", [b"first"]) and mailbox.deliver("r2", [b"second"])
        assert mailbox.deliver("other", [b"x"]) is False
        return await future

    assert asyncio.run(twice()) == [b"first"]
