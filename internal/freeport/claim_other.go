//go:build !unix

package freeport

var claimed = map[int]bool{}

// claim takes port p for this process; without flock, other processes
// are not kept out.
func claim(p int) (bool, error) {
	if claimed[p] {
		return false, nil
	}
	claimed[p] = true
	return true, nil
}
