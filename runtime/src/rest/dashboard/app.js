// The dashboard (written in the next commit).
