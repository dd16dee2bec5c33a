// Helpers of scripts/emulators.sh, run with node (the emulators are node packages, so node is there):
//   node scripts/emulators.js free-port          prints a free TCP port of 127.0.0.1
//   node scripts/emulators.js kinesalite PORT    runs kinesalite on 127.0.0.1:PORT until killed
//   node scripts/emulators.js wait URL SECONDS   waits until a Kinesis endpoint answers ListStreams
//   node scripts/emulators.js create-stream URL NAME SHARDS
//                                                creates a Kinesis stream and waits until it is ACTIVE
// NODE_PATH must point at .emulators/node_modules.
'use strict'
const http = require('http')
const net = require('net')

const [command, ...args] = process.argv.slice(2)

if (command === 'free-port') {
  const server = net.createServer()
  server.listen(0, '127.0.0.1', () => {
    const { port } = server.address()
    server.close(() => console.log(port))
  })
} else if (command === 'kinesalite') {
  // Its CLI listens on every interface; from node it binds where we say. Streams become ACTIVE
  // quickly (the tests create one per test) and the account's shard limit is out of the way.
  const port = Number(args[0])
  const server = require('kinesalite')({
    createStreamMs: 20,
    deleteStreamMs: 20,
    updateStreamMs: 20,
    shardLimit: 10000,
  })
  server.listen(port, '127.0.0.1', (err) => {
    if (err) throw err
    console.log(`kinesalite listening on 127.0.0.1:${port}`)
  })
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.on(signal, () => server.close(() => process.exit(0)))
  }
} else if (command === 'wait') {
  // Any HTTP answer to a Kinesis call (even "missing authentication") means the server is up.
  const url = new URL(args[0])
  const deadline = Date.now() + Number(args[1] || 60) * 1000
  const attempt = () => {
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path: '/',
        method: 'POST',
        headers: {
          'Content-Type': 'application/x-amz-json-1.1',
          'X-Amz-Target': 'Kinesis_20131202.ListStreams',
        },
        timeout: 2000,
      },
      (res) => {
        res.resume()
        process.exit(0)
      },
    )
    const retry = () => {
      if (Date.now() > deadline) {
        console.error(`${url} did not answer in ${args[1] || 60} s`)
        process.exit(1)
      }
      setTimeout(attempt, 200)
    }
    req.on('error', retry)
    req.on('timeout', () => req.destroy())
    req.end('{}')
  }
  attempt()
} else if (command === 'create-stream') {
  // The emulators check that a request is signed, not the signature: a well-formed SigV4 header
  // with test credentials is enough (benchmarks only; the Rust code signs with the AWS SDK).
  const [endpoint, name, shards] = args
  const url = new URL(endpoint)
  const call = (target, body) =>
    new Promise((resolve, reject) => {
      const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+/, '')
      const req = http.request(
        {
          host: url.hostname,
          port: url.port,
          path: '/',
          method: 'POST',
          headers: {
            'Content-Type': 'application/x-amz-json-1.1',
            'X-Amz-Target': `Kinesis_20131202.${target}`,
            'X-Amz-Date': stamp,
            Authorization: `AWS4-HMAC-SHA256 Credential=test/${stamp.slice(0, 8)}/us-east-1/kinesis/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=0000`,
          },
        },
        (res) => {
          let text = ''
          res.on('data', (d) => (text += d))
          res.on('end', () =>
            res.statusCode === 200
              ? resolve(text ? JSON.parse(text) : {})
              : reject(new Error(`${target}: HTTP ${res.statusCode} ${text}`)),
          )
        },
      )
      req.on('error', reject)
      req.end(JSON.stringify(body))
    })
  const main = async () => {
    await call('CreateStream', { StreamName: name, ShardCount: Number(shards) })
    for (let i = 0; i < 300; i++) {
      const d = await call('DescribeStreamSummary', { StreamName: name })
      if (d.StreamDescriptionSummary.StreamStatus === 'ACTIVE') return
      await new Promise((r) => setTimeout(r, 100))
    }
    throw new Error(`stream ${name} did not become ACTIVE`)
  }
  main().catch((e) => {
    console.error(e.message)
    process.exit(1)
  })
} else {
  console.error(`unknown command ${command}`)
  process.exit(2)
}
