//! A program that holds a seat, for exit.test.ts: `holder.js MS` checks out (settings from the
//! environment), prints "held SESSION_ID", and keeps the event loop busy for MS milliseconds.

import { checkout } from "../src/index.js";

const ms = Number(process.argv[2] ?? "0");
const seat = await checkout(process.env.LEASEHOLD_LICENSE_ID ?? "");
console.log(`held ${seat.id}`);
setTimeout(() => console.log("done"), ms);
