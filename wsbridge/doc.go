// Package wsbridge is Herald's HTTP side: health and readiness checks for
// load balancers and orchestrators, and (as it lands) WebSocket, Server-Sent
// Events, long-poll and HTTP publish for browsers and backends without a
// Redis client. A connection is a broker client, like a RESP connection.
package wsbridge
