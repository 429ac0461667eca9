"""``ws/static/ws/push.js`` in a real headless Chromium against real daphne and Redis.

The page is the home page (it loads ``push.js``). Each test wraps the page's
``WebSocket`` to record the frames that cross it, then drives a ``PushClient``
of its own through ``page.evaluate``.
"""

from __future__ import annotations

from typing import Any

from project.redis_server import free_port
from tests.support.browser import browser, in_plain_thread  # noqa: F401 - browser: a fixture
from tests.support.processes import DaphneServer
from ws import keys, push, topics
from ws.protocol import encode_body
from ws.publisher import publisher
from ws.push import ephemeral

WAIT_MS = 10_000

# Records every frame the page's sockets send and receive, then makes
# ``window.client``, a PushClient, and ``listen(topic)``.
HARNESS = """
(options) => {
  window.sent = [];      // [socket index, frame]
  window.inbound = [];   // [socket index, frame]
  window.sockets = [];
  window.closes = [];    // [socket index, close code]
  const Native = WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      const index = sockets.push(this) - 1;
      this.addEventListener("message", (e) => inbound.push([index, JSON.parse(e.data)]));
      this.addEventListener("close", (e) => closes.push([index, e.code]));
    }
    send(data) {
      sent.push([sockets.indexOf(this), JSON.parse(data)]);
      return super.send(data);
    }
  };
  window.states = [];
  window.errors = [];
  window.received = {};  // topic -> [data]
  window.resets = [];    // [topic, frame]
  window.ephemerals = {};  // topic -> [data]
  window.stops = {};     // topic -> the unsubscribe function
  window.client = new PushClient(options);
  client.on("state", (state) => states.push(state));
  client.on("error", (frame) => errors.push(frame));
  window.listen = (topic) => {
    received[topic] = [];
    ephemerals[topic] = [];
    stops[topic] = client.subscribe(topic, (data) => received[topic].push(data), {
      onReset: (frame) => resets.push([topic, frame]),
      onEphemeral: (data) => ephemerals[topic].push(data),
    });
  };
}
"""

FAST_RETRIES = {"minDelayMs": 100, "maxDelayMs": 1000}


def push_from_thread(topic: str, data: Any) -> int:
    """``push`` as a view would: Playwright's sync API runs an event loop in this thread."""
    return in_plain_thread(push, topic, data)


def ephemeral_from_thread(topic: str, data: Any) -> None:
    """``ephemeral`` (someone is typing) as a view or a publish handler would send it."""
    in_plain_thread(ephemeral, topic, data)


def lose_on_the_way(topic: str, data: Any) -> int:
    """Number and keep a message in the topic's history but deliver it to nobody.

    What a dropped channel-layer message looks like to a client: a hole in ``seq``.
    """
    body = encode_body(data, "success", 200)
    elsewhere = topics.group_name("room.pushjs-nobody")

    def publish() -> int:
        return publisher.run(lambda: publisher.publish(topic, elsewhere, body)).seq

    return in_plain_thread(publish)


def open_page(browser: Any, server: DaphneServer) -> tuple[Any, list[str]]:  # noqa: F811
    """The home page with the harness installed, and the list its uncaught errors go to."""
    page = browser.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.goto(server.http_url("/"))
    assert page.evaluate("typeof PushClient") == "function"
    page.evaluate(HARNESS, FAST_RETRIES)
    return page, page_errors


def wait_for(page: Any, expression: str, arg: Any = None) -> None:
    page.wait_for_function(expression, arg=arg, timeout=WAIT_MS)


def listen(page: Any, topic: str) -> None:
    """Subscribe the page's client and wait until the server has answered."""
    page.evaluate("(topic) => listen(topic)", topic)
    wait_for(
        page,
        "(topic) => inbound.some(([, f]) => f.op === 'subscribed' && f.topic === topic)",
        topic,
    )


def received(page: Any, topic: str) -> list[Any]:
    return page.evaluate("(topic) => received[topic]", topic)


def wait_received(page: Any, topic: str, count: int) -> None:
    wait_for(page, f"(topic) => received[topic].length >= {count}", topic)


def frames(page: Any, name: str, topic: str, op: str) -> list[dict[str, Any]]:
    """Frames of ``op`` on ``topic`` the page sent (``name="sent"``) or got (``"inbound"``)."""
    return page.evaluate(
        f"([topic, op]) => {name}.filter(([, f]) => f.topic === topic && f.op === op)"
        ".map(([, f]) => f)",
        [topic, op],
    )


def test_resumes_across_server_restarts_then_resets_when_too_far_behind(
    child_env,
    log_dir,
    browser,  # noqa: F811
):
    topic = "room.pushjs-restart"
    env = {**child_env, "PUSH_REPLAY_LIMIT": "5"}
    port = free_port()
    servers = [DaphneServer(env, log_dir, port, name="daphne-pushjs-1")]
    try:
        page, page_errors = open_page(browser, servers[-1])
        listen(page, topic)
        for n in range(3):
            push_from_thread(topic, n)
        wait_received(page, topic, 3)

        # Down while 5 messages are pushed (within the replay limit): all replayed.
        servers[-1].stop()
        wait_for(page, "client.state === 'reconnecting'")
        for n in range(3, 8):
            push_from_thread(topic, n)  # kept in the topic's history meanwhile
        servers.append(DaphneServer(env, log_dir, port, name="daphne-pushjs-2"))
        wait_received(page, topic, 8)
        wait_for(page, "client.state === 'open'")
        push_from_thread(topic, 8)  # a live one after the replay: nothing doubled before it
        wait_received(page, topic, 9)

        assert received(page, topic) == list(range(9))
        first, again = frames(page, "inbound", topic, "subscribed")
        assert frames(page, "sent", topic, "subscribe")[-1] == {
            "op": "subscribe",
            "topic": topic,
            "since": first["seq"] + 3,
            "epoch": first["epoch"],
        }
        assert again["recovered"] is True
        assert again["seq"] == first["seq"] + 8
        assert page.evaluate("resets") == []

        # Down while 6 are pushed, over the limit: no partial replay; the page is told.
        servers[-1].stop()
        wait_for(page, "client.state === 'reconnecting'")
        for n in range(9, 15):
            push_from_thread(topic, n)
        servers.append(DaphneServer(env, log_dir, port, name="daphne-pushjs-3"))
        wait_for(page, "resets.length > 0")
        [(reset_topic, reset)] = page.evaluate("resets")
        assert reset_topic == topic
        assert reset["op"] == "subscribed"
        assert reset["recovered"] is False
        assert reset["seq"] == first["seq"] + 15
        push_from_thread(topic, 15)
        wait_received(page, topic, 10)
        assert received(page, topic) == [*range(9), 15]

        assert page.evaluate("states") == [
            "connecting", "open", "reconnecting", "open", "reconnecting", "open",
        ]  # fmt: skip
        assert page.evaluate("errors") == []
        assert page_errors == []
        assert servers[-1].failures_since(0) == []
        page.close()
    finally:
        for server in servers:
            server.stop()


def test_lost_and_repeated_messages_reach_the_page_once_in_order(
    daphne_server,
    browser,  # noqa: F811
):
    topic = "room.pushjs-lost"
    page, page_errors = open_page(browser, daphne_server)
    listen(page, topic)
    start = push_from_thread(topic, 0) - 1
    push_from_thread(topic, 1)
    wait_received(page, topic, 2)

    # Message 2 never reaches the socket; message 3 does and shows the hole. The
    # server sends a "subscribed" frame unasked, then 2 and 3 from the history.
    assert lose_on_the_way(topic, 2) == start + 3
    push_from_thread(topic, 3)
    wait_received(page, topic, 4)
    assert received(page, topic) == [0, 1, 2, 3]

    # The server replays 2..4 once more on the client's own socket: all duplicates.
    epoch = frames(page, "inbound", topic, "subscribed")[0]["epoch"]
    page.evaluate(
        """([topic, since, epoch]) => {
          const [index] = sent.find(([, f]) => f.topic === topic);
          sockets[index].send(JSON.stringify({op: "subscribe", topic, since, epoch}));
        }""",
        [topic, start + 1, epoch],
    )
    wait_for(
        page,
        "([topic, seq]) => inbound.filter(([, f]) => f.topic === topic && f.seq === seq)"
        ".length > 1",
        [topic, start + 4],
    )
    push_from_thread(topic, 4)
    wait_received(page, topic, 5)
    assert received(page, topic) == [0, 1, 2, 3, 4]
    assert page.evaluate("resets") == []
    assert page_errors == []
    page.close()


def test_a_gap_the_page_sees_makes_it_ask_for_a_replay(daphne_server, browser):  # noqa: F811
    topic = "room.pushjs-gap"
    page, page_errors = open_page(browser, daphne_server)
    listen(page, topic)
    start = push_from_thread(topic, 0) - 1
    wait_received(page, topic, 1)
    epoch = frames(page, "inbound", topic, "subscribed")[0]["epoch"]

    # Message 1 is kept but reaches nobody, and the server does not know the socket
    # is behind. A frame from two ahead arriving now (one lost between the server and
    # the page: forged into the real socket, the one frame here not from the server)
    # must not be shown; the client asks for what follows its position instead.
    assert lose_on_the_way(topic, 1) == start + 2
    page.evaluate(
        """([topic, seq]) => {
          const [index] = sent.find(([, f]) => f.topic === topic);
          const frame = {op: "message", topic, seq, msg: "success", code: 200, data: "forged"};
          sockets[index].dispatchEvent(new MessageEvent("message", {data: JSON.stringify(frame)}));
        }""",
        [topic, start + 3],
    )
    wait_received(page, topic, 2)
    assert frames(page, "sent", topic, "subscribe")[-1] == {
        "op": "subscribe",
        "topic": topic,
        "since": start + 1,
        "epoch": epoch,
    }
    push_from_thread(topic, 2)
    wait_received(page, topic, 3)
    assert received(page, topic) == [0, 1, 2]
    assert page_errors == []
    page.close()


def test_two_topics_share_one_socket_and_unsubscribe_stops_delivery(
    daphne_server,
    browser,  # noqa: F811
):
    kept, dropped = "room.pushjs-kept", "room.pushjs-dropped"
    page, page_errors = open_page(browser, daphne_server)
    listen(page, kept)
    listen(page, dropped)
    push_from_thread(kept, "k1")
    push_from_thread(dropped, "d1")
    wait_received(page, kept, 1)
    wait_received(page, dropped, 1)
    sockets = page.evaluate(
        "(topics) => new Set(sent.filter(([, f]) => topics.includes(f.topic))"
        ".map(([index]) => index)).size",
        [kept, dropped],
    )
    assert sockets == 1

    page.evaluate("(topic) => stops[topic]()", dropped)
    wait_for(
        page,
        "(topic) => inbound.some(([, f]) => f.op === 'unsubscribed' && f.topic === topic)",
        dropped,
    )
    push_from_thread(dropped, "d2")
    push_from_thread(kept, "k2")
    wait_received(page, kept, 2)
    assert received(page, kept) == ["k1", "k2"]
    assert received(page, dropped) == ["d1"]
    assert page_errors == []
    page.close()


def test_a_new_history_is_delivered_from_its_first_message(
    daphne_server,
    browser,  # noqa: F811
    redis_client,
):
    topic = "room.pushjs-epoch"
    page, page_errors = open_page(browser, daphne_server)
    listen(page, topic)
    push_from_thread(topic, 0)
    push_from_thread(topic, 1)
    wait_received(page, topic, 2)
    old = frames(page, "inbound", topic, "subscribed")[0]

    # The topic's history is lost (as when Redis restarts empty): the next push starts
    # a new epoch at seq 1, lower than what the page holds, and must still be shown.
    redis_client.delete(keys.topic(topic).meta, keys.topic(topic).history)
    assert push_from_thread(topic, 2) == 1
    push_from_thread(topic, 3)
    wait_received(page, topic, 4)
    assert received(page, topic) == [0, 1, 2, 3]
    assert frames(page, "inbound", topic, "subscribed")[-1]["epoch"] != old["epoch"]
    assert page.evaluate("resets") == []
    assert page_errors == []
    page.close()


def test_a_new_epoch_that_continues_the_page_s_history_loses_and_repeats_nothing(
    daphne_server,
    browser,  # noqa: F811
    redis_client,
):
    topic = "room.pushjs-failover"
    page, page_errors = open_page(browser, daphne_server)
    listen(page, topic)
    push_from_thread(topic, 0)
    push_from_thread(topic, 1)
    wait_received(page, topic, 2)
    old = frames(page, "inbound", topic, "subscribed")[0]

    # As after a Redis failover (ws/failover.py): the topic was last written in an earlier
    # generation, so its next push opens a new epoch that carries on from seq 2.
    redis_client.hset(keys.topic(topic).meta, "g", "an-earlier-generation")
    push_from_thread(topic, 2)
    push_from_thread(topic, 3)
    wait_received(page, topic, 4)
    assert received(page, topic) == [0, 1, 2, 3]
    told = frames(page, "inbound", topic, "subscribed")[-1]
    assert told["continues"] == old["epoch"] != told["epoch"]
    assert page.evaluate("(topic) => client._topics.get(topic).epoch", topic) == told["epoch"]
    assert page.evaluate("resets") == []
    assert page_errors == []
    page.close()


def test_refused_credentials_are_retried_a_few_times_then_the_client_stops(
    daphne_server,
    browser,  # noqa: F811
):
    page, page_errors = open_page(browser, daphne_server)
    page.evaluate(
        """() => {
          window.asked = 0;
          window.refused = new PushClient({
            minDelayMs: 50,
            maxDelayMs: 100,
            token: () => { asked += 1; return Promise.resolve("not-a-token"); },
          });
          window.refusedStates = [];
          window.refusedErrors = [];
          refused.on("state", (state) => refusedStates.push(state));
          refused.on("error", (frame) => refusedErrors.push(frame.code));
          refused.subscribe("room.pushjs-refused", () => {});
        }"""
    )
    wait_for(page, "refused.state === 'failed'")
    # Each try asked for a fresh token (tokens expire); the third refusal stops it. (A
    # try can also end in 1006: a server dropping the link can discard its close frame.)
    codes = [code for _, code in page.evaluate("closes")]
    assert codes.count(4001) == 3, codes
    assert page.evaluate("asked") == len(codes)
    assert page.evaluate("refusedStates")[-1] == "failed"
    assert page.evaluate("refusedErrors")[-1] == 4001
    # Stopped: no socket, no retry pending.
    assert page.evaluate("refused._socket === null && refused._retryTimer === null")
    assert page_errors == []
    page.close()


def test_ephemeral_events_reach_their_callback_outside_the_message_order(
    daphne_server,
    browser,  # noqa: F811
):
    topic = "room.pushjs-typing"
    page, page_errors = open_page(browser, daphne_server)
    listen(page, topic)
    push_from_thread(topic, "m1")
    wait_received(page, topic, 1)

    ephemeral_from_thread(topic, {"type": "typing", "user": 7})
    wait_for(page, "(topic) => ephemerals[topic].length === 1", topic)
    push_from_thread(topic, "m2")
    wait_received(page, topic, 2)

    # The typing event went to onEphemeral only: the messages kept their order, no
    # gap was seen (no replay asked for), and nothing was reset.
    assert page.evaluate("(topic) => ephemerals[topic]", topic) == [{"type": "typing", "user": 7}]
    assert received(page, topic) == ["m1", "m2"]
    assert len(frames(page, "sent", topic, "subscribe")) == 1
    assert page.evaluate("resets") == []
    assert page_errors == []
    page.close()
