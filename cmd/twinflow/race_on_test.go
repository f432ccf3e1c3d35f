//go:build race

package main

// raceEnabled says the tests run with the race detector; the binaries they
// run are then built with it too (and reuse the packages the test built).
const raceEnabled = true
