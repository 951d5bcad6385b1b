DROP TABLE local_list_entries;
DROP TABLE local_lists;
