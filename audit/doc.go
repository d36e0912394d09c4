// Package audit records who did what in the gateway, durably, and fans each
// row out to the places that want it.
//
// A Log is the single entry point. Record validates a Row, fills its id
// (UUIDv7) and time when empty, and returns only after the row is committed
// and fsynced by the Store; rows recorded concurrently share one commit
// (group commit), so durability costs one fsync per batch, not per row.
// Then, in order of distance from the core:
//
//  1. the row in storage, the source of truth (Store, implemented by the
//     store package for bbolt and PostgreSQL);
//  2. the telemetry tap: the structured logger given to New (the Caddy glue
//     passes the "sigra.audit" logger) and in-process subscribers
//     (Subscribe), which never slow down or break recording;
//  3. webhooks: for every configured webhook whose action patterns match, a
//     pending delivery is written in the same commit as the row (a durable
//     outbox, one queue per webhook); a background sender, one loop per
//     webhook, POSTs the row as JSON, signed with internal/hmacsig, retries
//     with exponential backoff and jitter, and parks deliveries that keep
//     failing as dead (DeadDeliveries). A receiver that is slow or down
//     delays only its own deliveries: while it is down its webhook backs
//     off as a whole, one probe per step (see DeliverDue);
//  4. timelines: Timeline pages through rows by actor, subject, action
//     pattern and time range, newest first, with opaque cursors; Export
//     streams a time range as NDJSON, oldest first.
//
// Retention (Prune, RunRetention) deletes rows older than a cut-off with
// their index entries and deliveries.
//
// Rows are append-only and idempotent by id + occurred_at: recording the
// same row twice stores it once, enqueues its webhooks once and fans it out
// once.
//
// Wiring, in short:
//
//	l, err := audit.New(logger, clock.Real{}, boltStore, audit.Options{
//		Webhooks:  hooks,
//		Retention: 400 * 24 * time.Hour,
//	})
//	l.Start(ctx)   // webhook sender and retention loop
//	defer l.Close()
//	err = l.Record(ctx, audit.Row{Action: "auth.logout", ActorType: audit.ActorUser, ActorID: uid})
//
// This package imports neither Caddy nor the store package: it declares the
// Store interface it needs and the store package implements it.
package audit
