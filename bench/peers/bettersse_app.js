// better-sse peer: every subscriber session registers on one Channel; a publish is Channel.broadcast.
// Run: node bettersse_app.js PORT  (NODE_PATH points at the bench's node_modules).
'use strict';
const express = require('express');
const { createChannel, createSession } = require('better-sse');

const port = Number(process.argv[2]);
const app = express();
const channel = createChannel();

app.post('/pub', express.json({ limit: '64kb' }), (req, res) => {
  channel.broadcast(req.body);
  res.status(202).end();
});

app.get('/sub', async (req, res) => {
  const session = await createSession(req, res, { keepAlive: 15000 });
  channel.register(session);
});

app.listen(port, '127.0.0.1', 4096);
