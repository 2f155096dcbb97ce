<?php
// This file is part of Moodle - https://moodle.org/

namespace local_acmetools\privacy;

/**
 * local_acmetools stores no personal data.
 *
 * @package    local_acmetools
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
