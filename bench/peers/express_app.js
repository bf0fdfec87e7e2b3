// Express peer, the naive loop: keep every response in a Set; a publish writes the event to each.
// Run: node express_app.js PORT  (NODE_PATH points at the bench's node_modules).
'use strict';
const express = require('express');

const port = Number(process.argv[2]);
const app = express();
const streams = new Set();

app.post('/pub', express.json({ limit: '64kb' }), (req, res) => {
  for (const stream of streams) stream.write(`data: ${JSON.stringify(req.body)}\n\n`);
  res.status(202).end();
});

app.get('/sub', (req, res) => {
  res.writeHead(200, {
    'Content-Type': 'text/event-stream',
    'Cache-Control': 'no-cache',
    'X-Accel-Buffering': 'no',
  });
  res.write(': open\n\n');
  streams.add(res);
  const heartbeat = setInterval(() => res.write(': ping\n\n'), 15000);
  req.on('close', () => {
    clearInterval(heartbeat);
    streams.delete(res);
  });
});

app.listen(port, '127.0.0.1', 4096);
