"""The seed's consumers.py, as written (only ``import json`` added, which it uses)."""

import json

from channels.generic.websocket import AsyncWebsocketConsumer


class BaseConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.group_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.room_group_name = "chat_%s" % self.group_name  # noqa: UP031 - the seed's text
        await self.channel_layer.group_add(self.room_group_name, self.channel_name)
        await self.accept()

        # 连接成功消息 (connected): sent to the whole group
        await self.channel_layer.group_send(
            self.room_group_name,
            {"type": "chat_data", "data": {"msg": "heartbeat", "code": 200, "data": []}},
        )

    async def disconnect(self, close_code):
        # Leave room group
        await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

    # Receive message from WebSocket
    async def receive(self, text_data):
        # 测试收发,根据情况修改 (test send/receive, adapt as needed)
        text_data_json = json.loads(text_data)
        message = text_data_json["message"]

        # Send message to room group
        await self.channel_layer.group_send(
            self.room_group_name, {"type": "chat_data", "data": {"message": message}}
        )

    # Receive message from room group
    async def chat_data(self, event):
        # Send message to WebSocket
        await self.send(text_data=json.dumps(event["data"]))

    async def msg_send(self, data, msg="success", code=200):
        """推送数据 (push data)"""
        await self.channel_layer.group_send(
            self.room_group_name,
            {"type": "chat_data", "data": {"msg": msg, "code": code, "data": data}},
        )
