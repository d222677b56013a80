"""Compatibility tests with the official Python REST client `scaledrone` (PyPI), unmodified.

The client is `Scaledrone(channel_id, secret_key, base_url=...)`; it joins
`base_url + '/' + channel_id + '/'` with the method's path and sends HTTP Basic
auth (channel id, secret) on every call. Every method returns the `requests`
Response. Paths it builds, all as in PROTOCOL.md §9:

    publish(room, data={})          POST {base}/{c}/{room}/publish            json=data
    publish([r1, r2], data={})      POST {base}/{c}/publish/rooms?r=r1&r=r2   json=data
    channel_stats()                 GET  {base}/{c}/stats
    members_list()                  GET  {base}/{c}/members
    rooms_list()                    GET  {base}/{c}/rooms
    room_members_list(room)         GET  {base}/{c}/{room}/members
    all_room_members_list()         GET  {base}/{c}/room-members

The room is pasted into the path unescaped; `requests` then percent-encodes
spaces and non-ASCII characters (not `/`, `?` or `#`), so the server's
percent-decoding of path segments is what makes such room names work.
`publish(room, None)` sends no body and no Content-Type.

What the REST calls do is observed from WebSocket subscribers (conftest.Subscriber).
"""

import time

import requests
from scaledrone import Scaledrone

from conftest import CHAT, OPEN, WAIT, wait_until

PUBLISH_KEYS = {"type", "room", "message", "id", "timestamp"}


def client(server, channel):
    return Scaledrone(channel["id"], channel["secret"], base_url=server.api)


def ok_json(response):
    assert response.status_code == 200, f"{response.request.method} {response.url} -> {response.status_code}: {response.text}"
    return response.json()


def assert_rest_delivery(frame, room, message, message_id):
    """A message published through REST: no client_id, integer-second timestamp."""
    assert set(frame) == PUBLISH_KEYS, f"unexpected keys (REST publishes carry no client_id): {frame}"
    assert frame["room"] == room
    assert frame["message"] == message
    assert frame["id"] == message_id
    assert isinstance(frame["timestamp"], int)
    assert abs(frame["timestamp"] - time.time()) < 120


def test_publish_one_room_on_open_channel(server, subscribers):
    sub = subscribers("open")
    sub.subscribe("news")
    sd = client(server, OPEN)

    body = ok_json(sd.publish("news", {"text": "hi", "n": [1, 2]}))
    assert set(body) == {"id"} and isinstance(body["id"], str) and body["id"], body
    assert_rest_delivery(sub.publication("news"), "news", {"text": "hi", "n": [1, 2]}, body["id"])

    # The client always sends JSON (Content-Type: application/json), so every JSON value
    # arrives as that value; the default `data={}` is an empty object.
    seen_ids = {body["id"]}
    for value in ["plain text", 0, False, [1, "two"], {}]:
        body = ok_json(sd.publish("news", value))
        assert body["id"] not in seen_ids, "message ids are unique"
        seen_ids.add(body["id"])
        assert_rest_delivery(sub.publication("news", f"publish of {value!r}"), "news", value, body["id"])
    body = ok_json(sd.publish("news"))
    assert_rest_delivery(sub.publication("news"), "news", {}, body["id"])

    # `publish(room, None)` sends an empty body with no Content-Type: the raw body, "",
    # is the message (PROTOCOL.md §9).
    body = ok_json(sd.publish("news", None))
    assert_rest_delivery(sub.publication("news"), "news", "", body["id"])


def test_publish_to_several_rooms(server, subscribers):
    sub = subscribers("open")
    sub.subscribe("alpha")
    sub.subscribe("beta")
    bystander = subscribers("open")
    bystander.subscribe("gamma")
    sd = client(server, OPEN)

    body = ok_json(sd.publish(["alpha", "beta"], {"multi": True}))
    assert set(body) == {"ids"}, body
    ids = body["ids"]
    assert set(ids) == {"alpha", "beta"}, body
    assert ids["alpha"] != ids["beta"]
    assert_rest_delivery(sub.publication("alpha"), "alpha", {"multi": True}, ids["alpha"])
    assert_rest_delivery(sub.publication("beta"), "beta", {"multi": True}, ids["beta"])

    # One room in the list still uses /publish/rooms.
    body = ok_json(sd.publish(["gamma"], "only gamma"))
    assert set(body["ids"]) == {"gamma"}
    first = bystander.publication("gamma")
    assert_rest_delivery(first, "gamma", "only gamma", body["ids"]["gamma"])
    assert not [f for f in bystander.frames if f.get("type") == "publish" and f["room"] != "gamma"]
    assert not [f for f in sub.frames if f.get("type") == "publish" and f["room"] == "gamma"]


def test_stats_members_rooms_on_open_channel(server, subscribers):
    x = subscribers("open")
    x.subscribe("room1")
    x.subscribe("observable-lobby")
    y = subscribers("open")
    y.subscribe("room2")
    y.subscribe("observable-lobby")
    z = subscribers("open")  # connected, subscribed to nothing
    other = subscribers("chat", name="elsewhere")  # another channel: never counted here
    other.subscribe("observable-room")
    sd = client(server, OPEN)

    assert ok_json(sd.channel_stats()) == {"users_count": 3}
    assert sorted(ok_json(sd.members_list())) == sorted([x.id, y.id]), "z subscribes to nothing"
    assert sorted(ok_json(sd.rooms_list())) == ["observable-lobby", "room1", "room2"]
    assert ok_json(sd.room_members_list("room1")) == [x.id]
    assert ok_json(sd.room_members_list("room2")) == [y.id]
    assert sorted(ok_json(sd.room_members_list("observable-lobby"))) == sorted([x.id, y.id])
    assert ok_json(sd.room_members_list("nobody-here")) == []
    everything = ok_json(sd.all_room_members_list())
    assert {room: sorted(ids) for room, ids in everything.items()} == {
        "room1": [x.id],
        "room2": [y.id],
        "observable-lobby": sorted([x.id, y.id]),
    }

    # Unsubscribe is acknowledged before the views change.
    y.unsubscribe("room2")
    assert sorted(ok_json(sd.rooms_list())) == ["observable-lobby", "room1"]
    assert ok_json(sd.room_members_list("room2")) == []
    everything = ok_json(sd.all_room_members_list())
    assert {room: sorted(ids) for room, ids in everything.items()} == {
        "room1": [x.id],
        "observable-lobby": sorted([x.id, y.id]),
    }

    # y disconnects; x sees the presence leave, then the counts converge.
    y.close()
    x.next(
        lambda f: f.get("type") == "observable_member_leave" and f["data"]["id"] == y.id,
        "observable_member_leave for y",
    )
    wait_until(lambda: ok_json(sd.channel_stats()) == {"users_count": 2} or sd.channel_stats().text, "users_count 2")
    assert ok_json(sd.members_list()) == [x.id]
    assert ok_json(sd.room_members_list("observable-lobby")) == [x.id]
    assert ok_json(sd.all_room_members_list()) == {"room1": [x.id], "observable-lobby": [x.id]}
    assert z.id not in ok_json(sd.members_list())


def test_chat_channel_with_basic_auth(server, subscribers):
    a = subscribers("chat", name="alice")
    a.subscribe("observable-room", history_count=100)
    a.next(lambda f: f.get("type") == "observable_members", "observable_members")
    b = subscribers("chat", name="bob")
    b_private = f"private-room-{b.id}"
    b.subscribe(b_private, history_count=100)
    sd = client(server, CHAT)

    # The secret grants everything: publish to the public room and to a private room.
    body = ok_json(sd.publish("observable-room", {"text": "from the server"}))
    assert_rest_delivery(a.publication("observable-room"), "observable-room", {"text": "from the server"}, body["id"])
    first_id = body["id"]
    body = ok_json(sd.publish(b_private, "server to bob"))
    assert_rest_delivery(b.publication(b_private), b_private, "server to bob", body["id"])
    body = ok_json(sd.publish(["observable-room", b_private], "to both"))
    assert set(body["ids"]) == {"observable-room", b_private}
    assert_rest_delivery(a.publication("observable-room"), "observable-room", "to both", body["ids"]["observable-room"])
    assert_rest_delivery(b.publication(b_private), b_private, "to both", body["ids"][b_private])

    assert ok_json(sd.channel_stats()) == {"users_count": 2}
    assert sorted(ok_json(sd.members_list())) == sorted([a.id, b.id])
    assert sorted(ok_json(sd.rooms_list())) == sorted(["observable-room", b_private])
    assert ok_json(sd.room_members_list("observable-room")) == [a.id]
    assert ok_json(sd.room_members_list(b_private)) == [b.id]
    assert ok_json(sd.all_room_members_list()) == {"observable-room": [a.id], b_private: [b.id]}

    # REST publishes enter history, without client_id, oldest first.
    c = subscribers("chat", name="carol")
    c.subscribe("observable-room", history_count=100)
    history = [
        c.next(lambda f, i=i: f.get("type") == "history_message" and f.get("index") == i, f"history index {i}")
        for i in range(2)
    ]
    assert [h["message"] for h in history] == [{"text": "from the server"}, "to both"]
    assert [h["id"] for h in history] == [first_id, body["ids"]["observable-room"]]
    assert all("client_id" not in h for h in history), history
    a.next(lambda f: f.get("type") == "observable_member_join" and f["data"]["id"] == c.id, "join of carol")
    assert ok_json(sd.channel_stats()) == {"users_count": 3}


def test_bad_credentials_are_refused(server, subscribers):
    a = subscribers("chat", name="alice")
    a.subscribe("observable-room")
    for wrong in [Scaledrone(CHAT["id"], "wrong-secret", base_url=server.api), Scaledrone(CHAT["id"], OPEN["secret"], base_url=server.api)]:
        for response in [wrong.publish("observable-room", "forged"), wrong.publish(["observable-room"], "forged"), wrong.channel_stats(), wrong.members_list(), wrong.rooms_list(), wrong.room_members_list("observable-room"), wrong.all_room_members_list()]:
            assert response.status_code == 401, f"{response.request.method} {response.url}: {response.status_code} {response.text}"
            assert isinstance(response.json().get("message"), str), response.text
    # Without credentials at all (not something the client does): 401 on the auth channel.
    response = requests.get(f"{server.api}/{CHAT['id']}/stats", timeout=WAIT)
    assert response.status_code == 401, response.text
    # Barrier: a real publish; the forged ones must not have been delivered before it.
    body = ok_json(client(server, CHAT).publish("observable-room", "genuine"))
    assert_rest_delivery(a.publication("observable-room"), "observable-room", "genuine", body["id"])
    assert not [f for f in a.frames if f.get("message") == "forged"]


def test_open_channel_accepts_unauthenticated_rest(server, subscribers):
    sub = subscribers("open")
    sub.subscribe("news")
    response = requests.post(f"{server.api}/{OPEN['id']}/news/publish", json={"anon": True}, timeout=WAIT)
    body = ok_json(response)
    assert_rest_delivery(sub.publication("news"), "news", {"anon": True}, body["id"])
    assert ok_json(requests.get(f"{server.api}/{OPEN['id']}/stats", timeout=WAIT)) == {"users_count": 1}


def test_room_names_are_percent_decoded(server, subscribers):
    room = "café au lait"
    sub = subscribers("open")
    sub.subscribe(room)
    sd = client(server, OPEN)
    response = sd.publish(room, "☕")
    assert "/caf%C3%A9%20au%20lait/publish" in response.request.url, response.request.url
    body = ok_json(response)
    assert_rest_delivery(sub.publication(room), room, "☕", body["id"])
    body = ok_json(sd.publish([room, "plain"], "both"))
    assert set(body["ids"]) == {room, "plain"}
    assert_rest_delivery(sub.publication(room), room, "both", body["ids"][room])
    assert ok_json(sd.room_members_list(room)) == [sub.id]
    assert ok_json(sd.rooms_list()) == [room]
    assert ok_json(sd.all_room_members_list()) == {room: [sub.id]}


def test_room_names_that_look_like_api_paths(server, subscribers):
    # The client pastes room names into the path, so rooms named after API words must
    # still route as rooms (PROTOCOL.md §9: /publish/rooms is matched before /{room}/publish).
    names = ["publish", "rooms", "stats", "members", "room-members"]
    sub = subscribers("open")
    for name in names:
        sub.subscribe(name)
    sd = client(server, OPEN)
    for name in names:
        body = ok_json(sd.publish(name, f"to {name}"))
        assert_rest_delivery(sub.publication(name), name, f"to {name}", body["id"])
        assert ok_json(sd.room_members_list(name)) == [sub.id]
    body = ok_json(sd.publish(["publish", "rooms"], "to two"))
    assert set(body["ids"]) == {"publish", "rooms"}
    assert_rest_delivery(sub.publication("publish"), "publish", "to two", body["ids"]["publish"])
    assert_rest_delivery(sub.publication("rooms"), "rooms", "to two", body["ids"]["rooms"])
    assert sorted(ok_json(sd.rooms_list())) == sorted(names)
