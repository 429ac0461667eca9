"""Mute, speaking and microphone choice in voice calls, in headless Chromium.

A page that must say something plays a speech WAV made here with espeak-ng and
sox as its microphone (``--use-file-for-fake-audio-capture``, looped), a silent
one a WAV of silence; each is a Chromium of its own, since the file is the
browser's. Chromium's fake device lists three microphones ("Fake Default Audio
Input", "Fake Audio Input 1", "Fake Audio Input 2", all the same source) and
three speakers: enough to change microphone and speaker mid-call for real.

Speaking is read as the page shows it (each chip's ``data-speaking``, from the
receiver's audio levels) by a sampler in the page every 50 ms, with the page's
own clock; mute latency is measured from the click to the other page's chip.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.browser import in_plain_thread, media_browser, media_browsers  # noqa: F401
from tests.support.call_pages import (
    WAIT_MS,
    assert_audio_rising,
    call_page,
    connect_one_to_one,
    direct_room_of,
    one_to_one_call,
    peer_stats,
    wait_for_phase,
)
from tests.support.users import make_user
from tests.support.voices import voice_files  # noqa: F401
from tests.support.waiting import poll_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.media]

SPEAKING_LEVEL = 0.02  # media.js SPEAKING_LEVEL
SPEAKING_HOLD_MS = 800  # media.js SPEAKING_HOLD_MS
SPEAKING_WITHIN_S = 1.5
MUTE_SHOWN_WITHIN_S = 1.0
QUIET_FOR_MS = 5000  # how long the silent page's chip is watched


def chip(peer: Any) -> str:
    return f"#call-peers li[data-id='{peer.pk}']"


def record_speaking(page: Any, peer: Any) -> None:
    """From now on, every 50 ms: whether ``peer``'s chip says speaking, its level, and when
    its first audio bytes came (``window.speakingRecord``, in the page's clock)."""
    page.evaluate(
        """(peerId) => {
            const record = window.speakingRecord = {
                connectedAt: null, firstBytesAt: null, speakingAt: null, everSpoke: false,
                maxLevel: 0,
            };
            let asking = false;
            setInterval(async () => {
                const now = performance.now();
                const chip = document.querySelector(`#call-peers li[data-id="${peerId}"]`);
                if (chip && chip.dataset.state === "connected" && record.connectedAt === null) {
                    record.connectedAt = now;
                }
                if (chip && chip.dataset.speaking === "true") {
                    record.everSpoke = true;
                    if (record.speakingAt === null) record.speakingAt = now;
                }
                record.maxLevel = Math.max(record.maxLevel, chatCalls.levels()[peerId] || 0);
                if (record.firstBytesAt !== null || asking) return;
                asking = true;
                const stats = await chatCalls.stats();
                if (stats[peerId] && stats[peerId].bytesReceived > 0) record.firstBytesAt = now;
                asking = false;
            }, 50);
        }""",
        peer.pk,
    )


def seconds_until(page: Any, selector: str, since: float) -> float:
    page.wait_for_selector(selector, timeout=WAIT_MS)
    return time.monotonic() - since


def click_mute(clicker: Any, watcher: Any, peer: Any, muted: bool) -> tuple[float, float]:
    """Click Mute (or Unmute) on ``clicker`` until ``watcher`` shows ``peer`` so: seconds
    from the page's click event to the chip (both pages' wall clock), and as the test saw
    it (Playwright's own steps included)."""
    clicked = time.monotonic()
    clicker.click("#call-mute")
    value = str(muted).lower()
    test_s = seconds_until(watcher, f"{chip(peer)}[data-muted='{value}']", clicked)
    return in_page_ms(clicker, watcher, "muted", value) / 1000, test_s


def log_chip(page: Any, peer: Any) -> None:
    """From now on, each change of ``peer``'s chip's muted or speaking, with the machine's
    wall clock (``window.chipLog``: the pages are other browsers on the same machine)."""
    page.evaluate(
        """(peerId) => {
            const log = window.chipLog = [];
            const note = () => {
                const chip = document.querySelector(`#call-peers li[data-id="${peerId}"]`);
                if (!chip) return;
                const last = log[log.length - 1];
                const now = {muted: chip.dataset.muted, speaking: chip.dataset.speaking};
                if (!last || last.muted !== now.muted || last.speaking !== now.speaking) {
                    log.push({...now, at: Date.now()});
                }
            };
            const what = {childList: true, subtree: true, attributes: true};
            new MutationObserver(note).observe(document.getElementById("call-peers"), what);
        }""",
        peer.pk,
    )


def log_mute_clicks(page: Any) -> None:
    """Each click on Mute/Unmute, as the page got it (``window.muteClicks``, wall clock)."""
    page.evaluate(
        """() => {
            window.muteClicks = [];
            document.getElementById("call-mute").addEventListener(
                "click", () => muteClicks.push(Date.now()), true);
        }"""
    )


def report(what: str, page_s: float, test_s: float) -> None:
    print(f"{what}: {page_s * 1000:.0f} ms after the click ({test_s * 1000:.0f} ms in the test)")


def in_page_ms(clicker: Any, watcher: Any, field: str, value: str) -> int:
    """From the last mute click on ``clicker`` to ``watcher``'s chip first showing
    ``field`` = ``value`` after it, in ms of the wall clock."""
    clicked = clicker.evaluate("() => muteClicks[muteClicks.length - 1]")
    log = watcher.evaluate("() => chipLog")
    shown = next(entry["at"] for entry in log if entry["at"] >= clicked and entry[field] == value)
    return shown - clicked


def test_the_speakers_chip_lights_up_the_silent_ones_never_and_mute_shows_within_a_second(
    daphne_server,
    media_browsers,  # noqa: F811
    voice_files,  # noqa: F811
):
    speech, silence = voice_files
    alice, bob = in_plain_thread(make_user, "talk-alice"), in_plain_thread(make_user, "talk-bob")
    slug = in_plain_thread(direct_room_of, alice, bob)
    alice_page, alice_errors = call_page(media_browsers(speech), daphne_server, alice, slug)
    bob_page, bob_errors = call_page(media_browsers(silence), daphne_server, bob, slug)
    record_speaking(bob_page, alice)  # Alice speaks...
    record_speaking(alice_page, bob)  # ...Bob is silent
    for page, other in ((alice_page, bob), (bob_page, alice)):
        log_chip(page, other)
        log_mute_clicks(page)

    connect_one_to_one(alice_page, bob_page)

    # Alice's chip on Bob's page says speaking soon after her audio can first reach him:
    # from when his page first saw the connection up or audio bytes in, whichever came first.
    bob_page.wait_for_function(
        """() => speakingRecord.speakingAt !== null && speakingRecord.connectedAt !== null
            && speakingRecord.firstBytesAt !== null""",
        timeout=WAIT_MS,
    )
    record = bob_page.evaluate("() => speakingRecord")
    flowing_at = min(record["connectedAt"], record["firstBytesAt"])
    first_speaking_s = (record["speakingAt"] - flowing_at) / 1000
    print(f"\nspeaking shown {first_speaking_s * 1000:.0f} ms after the connection was up")
    assert first_speaking_s <= SPEAKING_WITHIN_S
    assert record["maxLevel"] >= SPEAKING_LEVEL

    # Bob's chip on Alice's page: audio flows from him, and it never says speaking.
    watched = alice_page.wait_for_function(
        """(forMs) => {
            const record = speakingRecord;
            if (record.everSpoke) return "spoke";
            return record.firstBytesAt !== null && performance.now() - record.firstBytesAt >= forMs
                && "quiet";
        }""",
        arg=QUIET_FOR_MS,
        timeout=WAIT_MS,
    ).json_value()
    quiet = alice_page.evaluate("() => speakingRecord")
    assert (watched, quiet["everSpoke"]) == ("quiet", False)
    assert quiet["maxLevel"] < SPEAKING_LEVEL
    assert alice_page.get_attribute(chip(bob), "data-speaking") == "false"
    assert all(
        level < SPEAKING_LEVEL / 10 for level in alice_page.evaluate("chatCalls.levels()").values()
    )

    # Alice mutes: Bob's page shows it within a second of the click; she is not speaking.
    clicked = time.monotonic()
    mute_s, mute_test_s = click_mute(alice_page, bob_page, alice, muted=True)
    report("mute shown on the other page", mute_s, mute_test_s)
    assert mute_s <= MUTE_SHOWN_WITHIN_S
    assert bob_page.inner_text(chip(alice)).endswith(" · muted")
    assert bob_page.get_attribute(chip(alice), "data-speaking") == "false"
    assert alice_page.evaluate("() => chatCalls.devices().mic.enabled") is False

    # She goes on talking into a muted microphone: her own page says so.
    hint_s = seconds_until(alice_page, "#call-muted-hint:not([hidden])", clicked)
    print(f"'You are muted' shown {hint_s * 1000:.0f} ms after muting")
    assert alice_page.inner_text("#call-muted-hint") == "You are muted"
    # What Bob gets from her now is silence: her level there stays below speaking for
    # longer than the indicator's hold time, so speaking again below is her voice coming back.
    bob_page.wait_for_function(
        """([peerId, level, forMs]) => {
            const now = performance.now();
            if ((chatCalls.levels()[peerId] || 0) >= level) window.quietFrom = now;
            window.quietFrom = window.quietFrom || now;
            return now - window.quietFrom >= forMs;
        }""",
        arg=[alice.pk, SPEAKING_LEVEL, SPEAKING_HOLD_MS + 200],
        timeout=WAIT_MS,
        polling=50,
    )

    # Unmuted: the chip says so within a second, and speaking again within 1.5 s.
    clicked = time.monotonic()
    unmute_s, unmute_test_s = click_mute(alice_page, bob_page, alice, muted=False)
    speaking_test_s = seconds_until(bob_page, f"{chip(alice)}[data-speaking='true']", clicked)
    speaking_s = in_page_ms(alice_page, bob_page, "speaking", "true") / 1000
    report("unmute shown on the other page", unmute_s, unmute_test_s)
    report("speaking shown again after the unmute", speaking_s, speaking_test_s)
    assert unmute_s <= MUTE_SHOWN_WITHIN_S
    assert speaking_s <= SPEAKING_WITHIN_S
    alice_page.wait_for_selector("#call-muted-hint", state="hidden", timeout=WAIT_MS)
    assert bob_page.inner_text(chip(alice)) == "talk-alice · audio"

    # Bob mutes: Alice sees it; his silent microphone never shows him the hint.
    bob_mute_s, bob_mute_test_s = click_mute(bob_page, alice_page, bob, muted=True)
    report("the silent side's mute shown", bob_mute_s, bob_mute_test_s)
    assert bob_mute_s <= MUTE_SHOWN_WITHIN_S
    hinted = bob_page.wait_for_function(
        """() => {
            if (!document.getElementById("call-muted-hint").hidden) return "hint";
            window.quietSince = window.quietSince || performance.now();
            return performance.now() - window.quietSince >= 2000 && "none";
        }""",
        timeout=WAIT_MS,
    ).json_value()
    assert hinted == "none"
    assert alice_errors == bob_errors == []


def test_a_reloaded_muted_page_stays_muted_and_says_so_again_if_the_server_forgot(
    daphne_server,
    media_browser,  # noqa: F811
):
    call = one_to_one_call(media_browser, daphne_server, "remute")
    alice_page, bob_page = call.alice, call.bob
    alice = call.users[0]
    alice_page.click("#call-mute")
    bob_page.wait_for_selector(f"{chip(alice)}[data-muted='true']", timeout=WAIT_MS)

    # A reload: the tab remembers it was muted; the server does too. Nobody hears her.
    alice_page.reload()
    wait_for_phase(alice_page, "in-call")
    assert_audio_rising(bob_page, peers=1)
    assert alice_page.get_attribute("#call-mute", "aria-pressed") == "true"
    assert alice_page.evaluate("() => chatCalls.devices().mic.enabled") is False
    assert bob_page.get_attribute(chip(alice), "data-muted") == "true"

    # The server's record says unmuted (as after a lost frame): the next rejoin puts it right.
    in_plain_thread(set_muted_in_db, call.slug, alice.pk, False)
    alice_page.reload()
    wait_for_phase(alice_page, "in-call")
    poll_until(
        lambda: in_plain_thread(muted_in_db, call.slug, alice.pk),
        WAIT_MS / 1000,
        "mute published again after the rejoin",
    )
    bob_page.wait_for_selector(f"{chip(alice)}[data-muted='true']", timeout=WAIT_MS)
    assert alice_page.get_attribute("#call-mute", "aria-pressed") == "true"
    assert alice_page.evaluate("() => chatCalls.devices().mic.enabled") is False
    assert call.errors == [[], []]


def set_muted_in_db(slug: str, user_id: int, muted: bool) -> None:
    from chat.models import CallParticipant

    parts = CallParticipant.objects.filter(
        call__room__slug=slug, call__state="active", user_id=user_id
    )
    assert parts.update(muted=muted) == 1


def muted_in_db(slug: str, user_id: int) -> bool:
    from chat.models import CallParticipant

    return CallParticipant.objects.get(
        call__room__slug=slug, call__state="active", user_id=user_id
    ).muted


def offers(page: Any) -> dict[str, tuple[int, int]]:
    """Per peer: offers this page sent, and offers relayed to it."""
    return {
        peer: (figures["offersSent"], figures["offersReceived"])
        for peer, figures in peer_stats(page).items()
    }


def devices(page: Any) -> dict[str, Any]:
    return page.evaluate("() => chatCalls.devices()")


def wait_for_sent(page: Any, peer: Any, label: str) -> dict[str, Any]:
    """Until the track sent to ``peer`` is the microphone called ``label``, live."""
    page.wait_for_function(
        """([peerId, label]) => {
            const sent = chatCalls.devices().senders[peerId];
            return sent && sent.label === label && sent.readyState === "live";
        }""",
        arg=[peer.pk, label],
        timeout=WAIT_MS,
    )
    return devices(page)


def test_another_microphone_mid_call_replaces_the_track_without_an_offer_and_is_remembered(
    daphne_server,
    media_browser,  # noqa: F811
):
    call = one_to_one_call(media_browser, daphne_server, "mic")
    alice_page, bob_page = call.alice, call.bob
    bob = call.users[1]
    before = devices(alice_page)
    labels = [device["label"] for device in before["inputs"]]
    assert labels == ["Fake Default Audio Input", "Fake Audio Input 1", "Fake Audio Input 2"]
    assert before["senders"][str(bob.pk)]["label"] == "Fake Default Audio Input"
    second = before["inputs"][2]
    offers_before = (offers(alice_page), offers(bob_page))

    alice_page.click("#call-audio summary")
    alice_page.select_option("#call-mic", value=second["deviceId"])
    after = wait_for_sent(alice_page, bob, "Fake Audio Input 2")
    assert after["senders"][str(bob.pk)]["deviceId"] == second["deviceId"]
    assert after["mic"]["id"] == after["senders"][str(bob.pk)]["id"] != before["mic"]["id"]
    assert after["retired"][-1]["label"] == "Fake Default Audio Input"
    assert after["retired"][-1]["readyState"] == "ended"  # the old track was stopped
    assert_audio_rising(bob_page, peers=1)  # Bob hears the new microphone
    # No renegotiation: neither page sent an offer, none was relayed.
    assert (offers(alice_page), offers(bob_page)) == offers_before

    # A speaker of Alice's choice, for Bob's audio element.
    outputs = after["outputs"]
    assert after["canPickSpeaker"]
    assert len(outputs) >= 2
    alice_page.select_option("#call-speaker", value=outputs[1]["deviceId"])
    alice_page.wait_for_function(
        "([peerId, sink]) => chatCalls.devices().sinks[peerId] === sink",
        arg=[bob.pk, outputs[1]["deviceId"]],
        timeout=WAIT_MS,
    )

    # Remembered in this browser: the next call starts on that microphone and speaker.
    alice_page.click("#call-hangup")
    wait_for_phase(bob_page, "idle")
    connect_one_to_one(alice_page, bob_page)
    again = wait_for_sent(alice_page, bob, "Fake Audio Input 2")
    assert again["chosen"]["mic"] == second["deviceId"]
    assert again["sinks"][str(bob.pk)] == outputs[1]["deviceId"]
    assert alice_page.input_value("#call-mic") == second["deviceId"]
    assert call.errors == [[], []]


def test_a_microphone_that_goes_away_is_replaced_by_the_default_and_taken_back_when_it_returns(
    daphne_server,
    media_browser,  # noqa: F811
):
    call = one_to_one_call(media_browser, daphne_server, "unplug")
    alice_page, bob_page = call.alice, call.bob
    bob = call.users[1]
    second = devices(alice_page)["inputs"][2]
    alice_page.click("#call-audio summary")
    alice_page.select_option("#call-mic", value=second["deviceId"])
    wait_for_sent(alice_page, bob, "Fake Audio Input 2")
    offers_before = (offers(alice_page), offers(bob_page))

    # The fake device cannot be unplugged: the page's own device list loses it, and the
    # browser's devicechange event says the list changed, as when a headset is pulled out.
    alice_page.evaluate(
        """(gone) => {
            const media = navigator.mediaDevices;
            const real = MediaDevices.prototype.enumerateDevices.bind(media);
            media.enumerateDevices = async () => (await real()).filter((d) => d.deviceId !== gone);
            media.dispatchEvent(new Event("devicechange"));
        }""",
        second["deviceId"],
    )
    fallen = wait_for_sent(alice_page, bob, "Fake Default Audio Input")
    assert fallen["fallback"] is True
    assert (fallen["retired"][-1]["label"], fallen["retired"][-1]["readyState"]) == (
        "Fake Audio Input 2",
        "ended",
    )
    assert alice_page.inner_text("#call-media-note") == (
        "Fake Audio Input 2 is gone: now using Fake Default Audio Input"
    )
    assert_audio_rising(bob_page, peers=1)

    # It is back: the call goes back to it, still without an offer.
    alice_page.evaluate(
        """() => {
            delete navigator.mediaDevices.enumerateDevices;
            navigator.mediaDevices.dispatchEvent(new Event("devicechange"));
        }"""
    )
    back = wait_for_sent(alice_page, bob, "Fake Audio Input 2")
    assert back["fallback"] is False
    note = alice_page.inner_text("#call-media-note")
    assert note == "Back on your microphone (Fake Audio Input 2)"
    assert_audio_rising(bob_page, peers=1)
    assert (offers(alice_page), offers(bob_page)) == offers_before
    assert call.errors == [[], []]


def test_echo_cancellation_and_noise_suppression_apply_mid_call_and_are_remembered_across_a_reload(
    daphne_server,
    media_browser,  # noqa: F811
):
    call = one_to_one_call(media_browser, daphne_server, "switches")
    alice_page, bob_page = call.alice, call.bob
    bob = call.users[1]
    mic = devices(alice_page)["mic"]
    assert (mic["echoCancellation"], mic["noiseSuppression"]) == (True, True)
    assert (alice_page.is_checked("#call-echo"), alice_page.is_checked("#call-noise")) == (
        True,
        True,
    )
    offers_before = (offers(alice_page), offers(bob_page))

    alice_page.click("#call-audio summary")
    alice_page.uncheck("#call-echo")
    # The new track is taken first, then handed to the call (replaceTrack): wait for both.
    alice_page.wait_for_function(
        """(peer) => {
            const now = chatCalls.devices();
            return now.mic.echoCancellation === false
                && now.senders[peer] && now.senders[peer].echoCancellation === false;
        }""",
        arg=str(bob.pk),
        timeout=WAIT_MS,
    )
    sent = devices(alice_page)["senders"][str(bob.pk)]
    assert (sent["echoCancellation"], sent["noiseSuppression"], sent["readyState"]) == (
        False,
        True,
        "live",
    )
    assert_audio_rising(bob_page, peers=1)
    assert (offers(alice_page), offers(bob_page)) == offers_before

    # Reloaded, the page keeps the switches (localStorage) and rejoins with them.
    alice_page.reload()
    wait_for_phase(alice_page, "in-call")
    assert alice_page.is_checked("#call-echo") is False
    assert alice_page.is_checked("#call-noise") is True
    assert_audio_rising(bob_page, peers=1)
    mic = devices(alice_page)["mic"]
    assert (mic["echoCancellation"], mic["noiseSuppression"]) == (False, True)
    assert alice_page.evaluate("() => JSON.parse(localStorage.getItem('chat.media'))") == {
        "mic": None,
        "speaker": None,
        "echoCancellation": False,
        "noiseSuppression": True,
    }
    assert call.errors == [[], []]
