<?php
// This file is part of Moodle - https://moodle.org/

namespace local_initechreports\privacy;

/**
 * local_initechreports stores no personal data.
 *
 * @package    local_initechreports
 * @license    http://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class provider implements \core_privacy\local\metadata\null_provider {
    /**
     * The language string that says why.
     *
     * @return string
     */
    public static function get_reason(): string {
        return 'privacy:metadata';
    }
}
