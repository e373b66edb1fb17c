// @tus/server peer for tusker's benchmarks: FileStore (or S3Store when
// TUS_S3_BUCKET is set) on loopback. Usage: node server.mjs PORT DIR
import http from 'node:http';
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';

const [port, dir] = [Number(process.argv[2] ?? 1082), process.argv[3] ?? './data'];

let datastore;
if (process.env.TUS_S3_BUCKET) {
  const { S3Store } = await import('@tus/s3-store');
  datastore = new S3Store({
    partSize: 16 * 1024 * 1024,
    s3ClientConfig: {
      bucket: process.env.TUS_S3_BUCKET,
      endpoint: process.env.TUS_S3_ENDPOINT,
      region: process.env.AWS_REGION ?? 'us-east-1',
      forcePathStyle: true,
    },
  });
} else {
  datastore = new FileStore({ directory: dir });
}

const tus = new Server({ path: '/files', datastore });
http
  .createServer((req, res) => tus.handle(req, res))
  .listen(port, '127.0.0.1', () => console.log(`tus-node listening on 127.0.0.1:${port}`));
