// Package frontdoor is the runtime's front door: it takes messages from
// clients over core NATS requests and HTTP/Connect and makes many of them
// durable with one write.
package frontdoor
