// The batch's items in IndexedDB, so results survive a page reload.
// An item: {id, order, path, input (Blob, dropped once done), status, message,
// faces, ms, output (Blob), outputName}.

const DB_NAME = "cartoonize";
const STORE = "items";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE, { keyPath: "id" });
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

const database = open();

async function transaction(mode, work) {
  const db = await database;
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const result = work(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(result.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

/** Every stored item, in the order they were added. */
export async function loadAll() {
  const items = await transaction("readonly", (store) => store.getAll());
  return items.sort((a, b) => a.order - b.order);
}

export function save(item) {
  return transaction("readwrite", (store) => store.put(item));
}

export function clearAll() {
  return transaction("readwrite", (store) => store.clear());
}
