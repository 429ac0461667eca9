"""The seed's SendMessage: pushes from outside consumers (call it via async_to_sync)."""

from channels.layers import get_channel_layer


class SendMessage:
    """服务端 --> 客户端 推送 (server --> client push)"""

    def __init__(self, room_group_name):
        self.channel_layer = get_channel_layer()
        self.room_group_name = "chat_%s" % room_group_name  # noqa: UP031 - the seed's text

    async def send(self, val: dict):
        """
        chat_type: chat.chat_name
        """
        chat_type = val.pop("chat_type")
        await self.channel_layer.group_send(
            self.room_group_name,
            {
                "type": chat_type,
                "data": {"data": val, "msg": "success", "code": 200}
                if not val.get("code")
                else val,
            },
        )
