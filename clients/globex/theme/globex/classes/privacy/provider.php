<?php
// This file is part of the Globex theme for Moodle - https://moodle.org/

namespace theme_globex\privacy;

/**
 * theme_globex stores no personal data.
 *
 * @package    theme_globex
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
