package store

// CheckIsBolt is CheckStore without a secret to read: the check alone.
func CheckIsBolt(path string) error {
	_, err := CheckStore(path, "")
	return err
}
