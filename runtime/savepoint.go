package runtime

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// RestoreSavepoint copies a savepoint, as written by Stop with a savepoint
// dir, into the state dir of a data dir that has no state yet. The engine
// started on that data dir then resumes from the savepoint's checkpoint.
func RestoreSavepoint(savepointDir, stateDir string) error {
	if entries, err := os.ReadDir(stateDir); err == nil && len(entries) > 0 {
		return fmt.Errorf("restore: %s already holds state; restore into a new data dir", stateDir)
	}
	entries, err := os.ReadDir(savepointDir)
	if err != nil {
		return fmt.Errorf("restore: reading savepoint: %w", err)
	}
	if len(entries) == 0 {
		return fmt.Errorf("restore: savepoint %s is empty", savepointDir)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	for _, ent := range entries {
		if ent.IsDir() {
			continue
		}
		if err := copyFile(filepath.Join(savepointDir, ent.Name()), filepath.Join(stateDir, ent.Name())); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	return nil
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	if err := dst.Sync(); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}
