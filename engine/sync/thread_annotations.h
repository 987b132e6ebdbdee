// Clang thread-safety annotations (-Wthread-safety): the compiler checks
// that state marked GUARDED_BY(mu) is only touched with mu held, and that
// functions marked REQUIRES(mu) are only called with it held. Other
// compilers see nothing. The names follow clang's documentation
// (https://clang.llvm.org/docs/ThreadSafetyAnalysis.html), as Abseil's and
// LevelDB's do.
//
// The analysis sees only locks taken through annotated types: use
// kvstore::Mutex / MutexLock / CondVar (engine/sync/mutex.h), not
// std::mutex, for state you annotate.
#pragma once

#if defined(__clang__)
#define KVSTORE_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define KVSTORE_THREAD_ANNOTATION(x)
#endif

// A type that is a lock (Mutex).
#define CAPABILITY(x) KVSTORE_THREAD_ANNOTATION(capability(x))
// An RAII type that holds a lock for its lifetime (MutexLock).
#define SCOPED_CAPABILITY KVSTORE_THREAD_ANNOTATION(scoped_lockable)
// A member read and written only with the lock held.
#define GUARDED_BY(x) KVSTORE_THREAD_ANNOTATION(guarded_by(x))
// A pointer whose pointee is read and written only with the lock held.
#define PT_GUARDED_BY(x) KVSTORE_THREAD_ANNOTATION(pt_guarded_by(x))
// Locks that must be taken in this order.
#define ACQUIRED_BEFORE(...) KVSTORE_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define ACQUIRED_AFTER(...) KVSTORE_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
// The caller must hold the lock (and still holds it on return).
#define REQUIRES(...) KVSTORE_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
// The caller must not hold the lock (the function takes it).
#define EXCLUDES(...) KVSTORE_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
// The function takes / drops the lock and returns with it held / released.
#define ACQUIRE(...) KVSTORE_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) KVSTORE_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) KVSTORE_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
// Tells the analysis the lock is held here (checked at run time, if at all,
// by the function itself).
#define ASSERT_CAPABILITY(x) KVSTORE_THREAD_ANNOTATION(assert_capability(x))
// The function returns a reference to the given lock.
#define RETURN_CAPABILITY(x) KVSTORE_THREAD_ANNOTATION(lock_returned(x))
// Opts a function out of the analysis; say why where it is used.
#define NO_THREAD_SAFETY_ANALYSIS KVSTORE_THREAD_ANNOTATION(no_thread_safety_analysis)
