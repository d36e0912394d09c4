package store

// auditBuckets are created by OpenBolt; the audit backend lives in this file.
var auditBuckets = [][]byte{}
