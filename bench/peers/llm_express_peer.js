// W4 peer: Express + the official @anthropic-ai/sdk, one res.write per text delta.
// POST /v1/chat {messages, max_tokens} -> SSE `data: {"text": ...}` per delta, then `data: [DONE]`.
// Run: node llm_express_peer.js PORT UPSTREAM_URL  (NODE_PATH points at the bench's node_modules).
'use strict';
const express = require('express');
const Anthropic = require('@anthropic-ai/sdk');

const port = Number(process.argv[2]);
const client = new Anthropic({ apiKey: 'dummy', baseURL: process.argv[3], maxRetries: 0 });
const app = express();

app.post('/v1/chat', express.json(), async (req, res) => {
  const abort = new AbortController();
  res.on('close', () => abort.abort());
  res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
  try {
    const stream = await client.messages.create(
      {
        model: 'claude-sonnet-4-5',
        max_tokens: req.body.max_tokens || 1024,
        messages: req.body.messages,
        stream: true,
      },
      { signal: abort.signal },
    );
    for await (const event of stream) {
      if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') {
        res.write(`data: ${JSON.stringify({ text: event.delta.text })}\n\n`);
      }
    }
    res.write('data: [DONE]\n\n');
  } catch (err) {
    if (!abort.signal.aborted) res.write(`event: error\ndata: ${JSON.stringify({ message: String(err) })}\n\n`);
  }
  res.end();
});

app.listen(port, '127.0.0.1', 4096);
