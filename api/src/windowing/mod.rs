//! Windows: assigners, triggers, window operators. (Being written.)
