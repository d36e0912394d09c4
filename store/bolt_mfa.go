package store

// mfaBuckets are created by OpenBolt; the MFA and regulation backend lives
// in this file.
var mfaBuckets = [][]byte{}
