/* pool.c: the persistent worker threads a library handle splits its forwards over.
 *
 * One job at a time: miras_pool_run hands out task indices [0, n) to the workers and the
 * calling thread alike, and returns once every task has finished. Jobs from different
 * callers are serialised by run_lock, so a handle may be shared between threads. */
#include <pthread.h>
#include <stdlib.h>

#include "internal.h"

struct miras_pool {
  pthread_mutex_t run_lock; /* held by the caller for a whole job */
  pthread_mutex_t lock;     /* guards everything below */
  pthread_cond_t wake;      /* a new job (or shutdown) for the workers */
  pthread_cond_t finished;  /* the last task of a job has finished */
  pthread_t *workers;
  int32_t num_workers;
  int shutting_down;
  unsigned long generation; /* bumped per job, so a worker never runs one job twice */
  void (*task)(void *, int32_t);
  void *context;
  int32_t next;    /* next task index to hand out */
  int32_t count;   /* task indices of the current job */
  int32_t pending; /* tasks handed out or not yet, still to finish */
};

/* Runs tasks of the current job until none are left; called with `lock` held. */
static void drain(miras_pool *pool) {
  while (pool->next < pool->count) {
    int32_t index = pool->next++;
    pthread_mutex_unlock(&pool->lock);
    pool->task(pool->context, index);
    pthread_mutex_lock(&pool->lock);
    if (--pool->pending == 0)
      pthread_cond_broadcast(&pool->finished);
  }
}

static void *worker_main(void *arg) {
  miras_pool *pool = arg;
  unsigned long seen = 0;
  pthread_mutex_lock(&pool->lock);
  for (;;) {
    while (!pool->shutting_down && pool->generation == seen)
      pthread_cond_wait(&pool->wake, &pool->lock);
    if (pool->shutting_down)
      break;
    seen = pool->generation;
    drain(pool);
  }
  pthread_mutex_unlock(&pool->lock);
  return NULL;
}

miras_pool *miras_pool_create(int32_t num_workers) {
  miras_pool *pool = calloc(1, sizeof *pool);
  if (pool == NULL)
    return NULL;
  pool->workers = calloc((size_t)(num_workers > 0 ? num_workers : 1), sizeof *pool->workers);
  if (pool->workers == NULL) {
    free(pool);
    return NULL;
  }
  pthread_mutex_init(&pool->run_lock, NULL);
  pthread_mutex_init(&pool->lock, NULL);
  pthread_cond_init(&pool->wake, NULL);
  pthread_cond_init(&pool->finished, NULL);
  for (int32_t i = 0; i < num_workers; ++i) {
    if (pthread_create(&pool->workers[i], NULL, worker_main, pool) != 0)
      break; /* fewer workers: the caller still runs every task itself if need be */
    pool->num_workers = i + 1;
  }
  return pool;
}

void miras_pool_destroy(miras_pool *pool) {
  if (pool == NULL)
    return;
  pthread_mutex_lock(&pool->lock);
  pool->shutting_down = 1;
  pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->lock);
  for (int32_t i = 0; i < pool->num_workers; ++i)
    pthread_join(pool->workers[i], NULL);
  pthread_cond_destroy(&pool->finished);
  pthread_cond_destroy(&pool->wake);
  pthread_mutex_destroy(&pool->lock);
  pthread_mutex_destroy(&pool->run_lock);
  free(pool->workers);
  free(pool);
}

void miras_pool_run(miras_pool *pool, int32_t count, void (*task)(void *, int32_t),
                    void *context) {
  pthread_mutex_lock(&pool->run_lock);
  pthread_mutex_lock(&pool->lock);
  pool->task = task;
  pool->context = context;
  pool->next = 0;
  pool->count = count;
  pool->pending = count;
  ++pool->generation;
  pthread_cond_broadcast(&pool->wake);
  drain(pool);
  while (pool->pending > 0)
    pthread_cond_wait(&pool->finished, &pool->lock);
  pthread_mutex_unlock(&pool->lock);
  pthread_mutex_unlock(&pool->run_lock);
}
